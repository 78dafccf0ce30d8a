"""What happened: counters, the manual's stats lines, console and daily log files, metrics."""
