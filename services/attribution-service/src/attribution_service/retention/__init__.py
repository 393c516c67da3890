"""Retention of attribution-service's copy of clicks: a program's clicks older than its
`click_retention_days` (never less than its attribution window) are deleted by
servicekit.retention's worker in bounded batches. Their figures were folded into the analytics
counters when they arrived (analytics.handlers.on_link_clicked), so no count changes."""
