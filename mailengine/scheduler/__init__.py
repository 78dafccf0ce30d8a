"""Pure scheduling: when each message is due, which goes first, memory room, caps."""
