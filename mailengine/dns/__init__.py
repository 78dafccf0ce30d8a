"""Where mail for a domain goes: bypass table (pure), resolver (twisted.names + TTL cache)."""
