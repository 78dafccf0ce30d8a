"""The Lua scripts in a real redis-server answer as the supervisor's store in Python
(cluster/store.py) does: here, which refusals mark a cap as contended."""

from __future__ import annotations

import pytest

from mailengine.cluster import scripts
from mailengine.cluster.book import CONTENDED_SECONDS, LEASE_TTL_SECONDS, NODE_TTL_SECONDS
from mailengine.cluster.store import CapStore

pytestmark = pytest.mark.system

HOST = "host:192.0.2.1:25"
# (lease id, granted): a holds 1 and b 2 of 3; b's third is refused with its part (2 of
# 3 among 2 nodes) held, a's second below its part.
STEPS = [("a|1|1", True), ("b|1|1", True), ("b|1|2", True), ("b|1|3", False)]
MORE = [("a|1|2", False)]


def acquire(redis, lease_id: str, limit: int) -> bool:
    keys = [scripts.lease_key(HOST), scripts.CONTENDED, scripts.NODES]
    args = [lease_id, LEASE_TTL_SECONDS * 1000, CONTENDED_SECONDS * 1000]
    args += [NODE_TTL_SECONDS * 1000, limit]
    answer = redis.command("EVAL", scripts.ACQUIRE, str(len(keys)), *keys, *map(str, args))
    assert answer in ("0", "1"), answer
    return answer == "1"


def redis_contended(redis) -> set[str]:
    found = redis.command("ZRANGE", scripts.CONTENDED, "0", "-1").split()
    return {key.removeprefix(scripts.LEASES) for key in found}


def test_redis_marks_a_cap_contended_only_for_a_node_below_its_fair_part(redis_server):
    seconds = redis_server.command("TIME").split()[0]
    for node in ("a", "b"):
        redis_server.command("ZADD", scripts.NODES, f"{seconds}000", node)
    store = CapStore()
    for node in ("a", "b"):
        store.heartbeat(node, {}, [], NODE_TTL_SECONDS, LEASE_TTL_SECONDS, now=0.0)

    for lease_id, granted in STEPS:
        assert acquire(redis_server, lease_id, 3) is granted, lease_id
        assert store.acquire(lease_id, [(HOST, 3)], 10.0, 2.0, now=0.0) is granted
    assert redis_contended(redis_server) == set()
    assert store.heartbeat("a", {}, [], 10.0, 10.0, now=0.1).contended == frozenset()

    for lease_id, granted in MORE:
        assert acquire(redis_server, lease_id, 3) is granted, lease_id
        assert store.acquire(lease_id, [(HOST, 3)], 10.0, 2.0, now=0.1) is granted
    assert redis_contended(redis_server) == {HOST}
    assert store.heartbeat("a", {}, [], 10.0, 10.0, now=0.2).contended == {HOST}
