"""The AMP commands between the supervisor and its workers (over each worker's pipes)."""

from __future__ import annotations

import json
from typing import Any

from twisted.protocols import amp

CHUNK = amp.MAX_VALUE_LENGTH
# A worker's descriptors: AMP in and out, then the listening sockets (0-2: stdin, log lines).
AMP_IN_FD, AMP_OUT_FD, FIRST_LISTEN_FD = 3, 4, 5


class BigJSON(amp.Argument):
    """A JSON value of any size: AMP caps one value at 64 KiB, so it spans keys
    ``name``, ``name.1``, ``name.2``, ..."""

    def toBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        data = json.dumps(objects[str(name, "ascii")], separators=(",", ":")).encode()
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        strings[name] = chunks[0]
        for n, chunk in enumerate(chunks[1:], 1):
            strings[b"%s.%d" % (name, n)] = chunk

    def fromBox(self, name: bytes, strings: dict, objects: dict, proto: Any) -> None:
        parts = [strings.pop(name)]
        n = 1
        while b"%s.%d" % (name, n) in strings:
            parts.append(strings.pop(b"%s.%d" % (name, n)))
            n += 1
        objects[str(name, "ascii")] = json.loads(b"".join(parts))


class Status(amp.Command):
    """Supervisor -> worker: the worker's counters and state, as JSON (``workers.status``)."""

    arguments = []
    response = [(b"status", BigJSON())]


class TakeSnapshot(amp.Command):
    """Supervisor -> worker: the worker's dashboard picture (``workers.snapshots``)."""

    arguments = []
    response = [(b"snapshot", BigJSON())]


class DestinationAction(amp.Command):
    """Supervisor -> worker: the Destinations page's suspend, resume or retry now."""

    arguments = [
        (b"action", amp.Unicode()),
        (b"domain", amp.Unicode()),
        (b"minutes", amp.Float()),
    ]
    response = [(b"due", amp.Integer())]  # retry now: messages made due


class ApplySetting(amp.Command):
    """Supervisor -> worker: a setting changed in the web admin; ``raw`` is its JSON value."""

    arguments = [
        (b"section", amp.Unicode()),
        (b"key", amp.Unicode()),
        (b"raw", BigJSON()),
    ]
    response = [(b"problem", amp.Unicode())]


class RequestShutdown(amp.Command):
    """Worker -> supervisor: retry/shutdown.txt was found; stop the whole box."""

    arguments = []
    response = []


class Ready(amp.Command):
    """Worker -> supervisor: started, accepting on the shared sockets."""

    arguments = [(b"pid", amp.Integer())]
    response = []


# Worker -> supervisor: the box's shared caps (issue 13 item 2), one command per
# ``cluster.node.StoreLink`` call; the supervisor answers from ``cluster.store.CapStore``.


class CapsHeartbeat(amp.Command):
    """Alive; holds ``leases`` ([lease id, [cap keys]]): nodes, reactions, contended caps."""

    arguments = [(b"node", amp.Unicode()), (b"info", BigJSON()), (b"leases", BigJSON())]
    response = [(b"heard", BigJSON())]


class CapsLeave(amp.Command):
    arguments = [(b"node", amp.Unicode())]
    response = []


class CapsAcquire(amp.Command):
    """A connection lease under ``caps`` ([cap key, limit]); granted or not."""

    arguments = [(b"lease_id", amp.Unicode()), (b"caps", BigJSON())]
    response = [(b"granted", amp.Boolean())]


class CapsRelease(amp.Command):
    arguments = [(b"lease_id", amp.Unicode()), (b"keys", BigJSON())]
    response = []


class CapsRate(amp.Command):
    """GCRA tokens for a domain's message rate (seconds)."""

    arguments = [
        (b"domain", amp.Unicode()),
        (b"interval", amp.Float()),
        (b"tolerance", amp.Float()),
        (b"want", amp.Integer()),
    ]
    response = [(b"granted", amp.Integer()), (b"wait", amp.Float())]


class CapsHourlyTake(amp.Command):
    arguments = [(b"cap", amp.Integer()), (b"want", amp.Integer())]
    response = [(b"granted", amp.Integer()), (b"bucket", amp.Integer()), (b"wait", amp.Float())]


class CapsHourlyGiveBack(amp.Command):
    arguments = [(b"bucket", amp.Integer()), (b"count", amp.Integer())]
    response = []


class CapsPublish(amp.Command):
    """A reaction every worker applies."""

    arguments = [(b"reaction", BigJSON())]
    response = []


class Channel(amp.AMP):
    """AMP over a worker's pipes, without AMP's log line at each end's start and end."""

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Any = None) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
