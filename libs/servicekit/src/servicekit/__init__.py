"""Service defaults every service shares (the eShop "ServiceDefaults" idea): settings, the
Postgres pool, API-key auth, problem+json errors, health endpoints, the runtime that owns the
producer, outbox relay and consumers, telemetry and migrations. Nothing domain-specific."""
