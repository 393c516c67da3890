"""Workspaces (tenants), their API keys and the audit log of changes to them. link-service owns
them because it owns programs, the root of a workspace's data; the other services keep a copy of
the key table from link.events (servicekit.keys)."""
