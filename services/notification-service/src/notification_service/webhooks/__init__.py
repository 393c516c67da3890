"""Webhooks: merchants' endpoints, the messages and deliveries made from consumed events, the
dispatcher that sends them signed and retries them, the SSRF guard on their destinations, and
the receiver-side verification helper."""
