"""Retention of mail and webhook bodies: past EMAIL_BODY_RETENTION_DAYS and
WEBHOOK_BODY_RETENTION_DAYS, what settled mails and webhook messages held of their bodies is
cleared by servicekit.retention's worker in bounded batches; the rows stay."""
