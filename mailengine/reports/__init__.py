"""Pure text builders: DSN mails, delivery reports, undeliverable and bounce lines."""
