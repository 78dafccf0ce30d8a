"""Worker processes on one box ([server] workers > 1): the supervisor that starts, restarts
and stops them and serves the web admin for all, the worker's side, and the AMP channel
between them."""
