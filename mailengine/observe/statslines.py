"""The manual's statistics lines (§8), exactly (pure)."""

from __future__ import annotations


def per_hour(count: int, elapsed_seconds: float) -> int:
    return int(count * 3600 / elapsed_seconds) if elapsed_seconds > 0 else 0


def recv_line(inbound: int, relay: int, elapsed_seconds: float, total: int) -> str:
    """``401 recv [401 inbound, 0 relay] (206228/h avg, 4971 total)``"""
    count = inbound + relay
    return (
        f"{count} recv [{inbound} inbound, {relay} relay] "
        f"({per_hour(count, elapsed_seconds)}/h avg, {total} total)"
    )


def sent_line(sent: int, elapsed_seconds: float, total: int) -> str:
    """``445 sent (267000/h avg, 7960 total)``"""
    return f"{sent} sent ({per_hour(sent, elapsed_seconds)}/h avg, {total} total)"


def queue_size_line(messages: int) -> str:
    return f"queue size: {messages} messages in memory"


def queue_memory_line(kilobytes: int) -> str:
    return f"queue memory: {kilobytes} KB"
