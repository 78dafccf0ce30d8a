"""Pure text builders: DSN mails, delivery reports, undeliverable lines, admin notices."""
