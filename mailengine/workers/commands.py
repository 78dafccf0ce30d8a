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


class Channel(amp.AMP):
    """AMP over a worker's pipes, without AMP's log line at each end's start and end."""

    def makeConnection(self, transport: Any) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Any = None) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
