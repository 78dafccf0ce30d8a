"""Pure decisions about peers and addresses: relay rules, admission, IP ranges, VERP."""
