"""The ESMTP listener: accepts mail and hands it to the queue (policies: inbound issue)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.mail import smtp
from zope.interface import implementer

from mailengine.engine import Engine
from mailengine.queue.content import dot_unstuff, to_canonical
from mailengine.queue.envelope import Envelope


def is_local(domain: str, local_domains: tuple[str, ...]) -> bool:
    return "@" in local_domains or "." in local_domains or domain.lower() in local_domains


@implementer(smtp.IMessage)
class _Collect:
    def __init__(self, txn: _Transaction) -> None:
        self.txn = txn
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred:
        return self.txn.finish(b"\r\n".join(self.lines) + b"\r\n")

    def connectionLost(self) -> None:
        self.lines = []


@implementer(smtp.IMessage)
class _Null:
    def lineReceived(self, line: bytes) -> None:
        pass

    def eomReceived(self) -> defer.Deferred:
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(smtp.IMessageDelivery)
class _Transaction:
    def __init__(self, engine: Engine, proto: smtp.ESMTP) -> None:
        self.engine = engine
        self.proto = proto
        self.sender = ""
        self.local: list[str] = []
        self.relay: list[str] = []
        self._made = False

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
        return None

    def validateFrom(self, helo: Any, origin: smtp.Address) -> smtp.Address:
        self.helo = helo
        self.sender = str(origin)
        return origin

    def validateTo(self, user: smtp.User) -> Any:
        address = str(user.dest)
        domain = user.dest.domain.decode("ascii", "replace")
        if is_local(domain, self.engine.config.server.local_domains):
            self.local.append(address)
        else:
            self.relay.append(address)

        def make() -> Any:
            if self._made:
                return _Null()
            self._made = True
            return _Collect(self)

        return make

    def finish(self, raw: bytes) -> defer.Deferred:
        engine = self.engine
        data = to_canonical(dot_unstuff(raw))
        now = engine.reactor.seconds()
        waits = []
        transport: Any = self.proto.transport
        peer, host = transport.getPeer(), transport.getHost()
        helo = self.helo[0].decode("ascii", "replace") if self.helo and self.helo[0] else ""
        received = {
            "helo": helo,
            "peertcpip": peer.host,
            "peerhostname": peer.host,
            "localhostname": host.host,
            "localtcpip": host.host,
            "datasize": str(len(data)),
        }
        for kind, rcpts in (("inbound", self.local), ("relay", self.relay)):
            if not rcpts:
                continue
            env = Envelope(
                message_id=engine.ids.next_id(),
                mail_from=self.sender,
                rcpt_to_send=list(rcpts),
                time_created=now,
                other=dict(received),
            )
            accept = (
                engine.queue.accept_incoming if kind == "inbound" else engine.queue.accept_relay
            )
            waits.append(accept(env, data))
            engine.counters.received(kind)
        return defer.gatherResults(waits, consumeErrors=True)


@implementer(smtp.IMessageDeliveryFactory)
class _PerTransaction:
    def __init__(self, engine: Engine, proto: smtp.ESMTP) -> None:
        self.engine = engine
        self.proto = proto

    def getMessageDelivery(self) -> _Transaction:
        return _Transaction(self.engine, self.proto)


class InboundESMTP(smtp.ESMTP):
    noisy = False

    def extensions(self) -> dict[bytes, Any]:
        ext = super().extensions()
        size = self.factory.engine.config.smtp_in.max_message_size_bytes
        ext[b"SIZE"] = [str(size).encode()] if size else None
        return ext


class InboundFactory(smtp.SMTPFactory):
    protocol = InboundESMTP
    noisy = False

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.domain = engine.hostname.encode()

    def buildProtocol(self, addr: Any) -> InboundESMTP:
        p = super().buildProtocol(addr)
        p.factory = self
        p.timeout = self.engine.config.smtp_in.timeout_seconds
        p.deliveryFactory = _PerTransaction(self.engine, p)
        return p
