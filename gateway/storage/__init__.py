"""Where the gateway keeps cases, the outbox, inbound records and tokens (SQLite)."""
