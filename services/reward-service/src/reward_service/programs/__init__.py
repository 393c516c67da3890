"""The programs and advocates reward-service has heard of (copies of link.events, ids only), so
a read under an unknown program or holder answers 404 and a write under a program whose event has
not arrived yet 409 with Retry-After."""
