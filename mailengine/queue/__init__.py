"""The mailq/ directories: .inf format (pure), store (files, renames, fsync), scanner, enqueue."""
