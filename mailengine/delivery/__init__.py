"""Sending: delivery plan and connection slots (pure), the SMTP client, per-MX pools."""
