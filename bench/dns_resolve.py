"""How fast MailResolver answers, against the in-process test DNS server on loopback.

    /work/venv/bin/python -m bench.dns_resolve [--domains 2000] [--cached 100000]

Reports, in one invocation:
  * cold: N distinct domains resolved once each (MX + additional A), and the
    reference: bare twisted.names client.Resolver.lookupMailExchange of the same
    N names (no cache, no composition) against the same server;
  * cached: resolves of warm domains (what every message after the first pays);
  * coalescing: 1,000 concurrent resolves of one cold domain and the queries sent.
"""

from __future__ import annotations

import argparse
import random
import time

from twisted.internet import defer, task
from twisted.names import client

from mailengine.config.model import Config
from mailengine.dns.resolver import MailResolver
from tests.dnsserver import DNSTestServer, Zone


def per_hour(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s = {count * 3600 / seconds:,.0f}/hour"


async def run(reactor, opts) -> None:
    zone = Zone()
    names = [f"d{i}.bench.test" for i in range(opts.domains)]
    for name in names:
        zone.mx(name, 10, f"mx.{name}").address(f"mx.{name}", "127.0.0.2")
    zone.mx("hot.bench.test", 10, "mx1.hot.bench.test").mx("hot.bench.test", 10, "mx2.hot")
    zone.address("mx1.hot.bench.test", "127.0.0.3").address("mx2.hot", "127.0.0.4")
    server = DNSTestServer(zone).start()
    config = Config.defaults()
    batch = 200  # in flight at once, like a busy delivery engine

    async def timed(resolve_one, items) -> float:
        start = time.perf_counter()
        for i in range(0, len(items), batch):
            await defer.gatherResults([resolve_one(n) for n in items[i : i + batch]])
        return time.perf_counter() - start

    reference = client.Resolver(servers=[server.address], timeout=(2.0,))
    ref_seconds = await timed(reference.lookupMailExchange, names)
    zone.queries.clear()
    resolver = MailResolver(config, reactor, [server.address], rng=random.Random(1))
    cold_seconds = await timed(resolver.resolve, names)
    cold_queries = len(zone.queries)

    hot = ["hot.bench.test"] * 1000
    zone.queries.clear()
    await defer.gatherResults([resolver.resolve(n) for n in hot])
    coalesced = len(zone.queries)

    warm = [names[i % len(names)] for i in range(opts.cached)]
    cached_seconds = await timed(resolver.resolve, warm)

    print(f"cold, reference client.Resolver MX only: {per_hour(len(names), ref_seconds)}")
    print(
        f"cold, MailResolver:                      {per_hour(len(names), cold_seconds)}"
        f"  ({cold_queries} queries)"
    )
    print(f"cached, MailResolver:                    {per_hour(len(warm), cached_seconds)}")
    print(f"1,000 concurrent resolves of one domain: {coalesced} query on the wire")
    resolver.close()
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=2000)
    parser.add_argument("--cached", type=int, default=100_000)
    opts = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, opts)))


if __name__ == "__main__":
    main()
