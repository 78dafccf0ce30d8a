"""The web admin on Klein: login, dashboard, settings, queue, JSON API, /metrics."""
