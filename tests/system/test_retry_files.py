"""Files dropped into retry/ of a running engine: hostile ones are skipped, good ones sent."""

import os
import smtplib

import pytest

from tests.sinks import route

pytestmark = pytest.mark.system
STOPPED = (0, -15, 143)  # SIGTERM: twistd re-raises the signal after a clean stop


def greets(engine):
    with smtplib.SMTP("127.0.0.1", engine.smtp_port, timeout=10) as s:
        return s.noop()[0] == 250


def test_a_fifo_and_a_symlink_in_retry_neither_freeze_the_engine_nor_get_mailed(
    engine_factory, sinks, tmp_path
):
    sink = sinks("127.0.2.9")
    engine = engine_factory(
        {"dns": {"bypass": [route("x.test", sink)]}, "queue": {"check_interval_seconds": 1}},
        start=False,
    )
    retry = os.path.join(engine.mailq, "retry")
    os.makedirs(retry)
    os.mkfifo(os.path.join(retry, "FIFO1@h.inf"))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"Subject: secret\r\n\r\nthe target of a symlink\r\n")
    with open(os.path.join(retry, "LINK1@h.inf"), "w") as fh:
        fh.write("mailfrom=s@y.test\nrcpttosend=a@x.test\n")
    os.symlink(secret, os.path.join(retry, "LINK1@h.dat"))
    engine.start()
    engine.wait_log("FIFO1@h.inf skipped and left in place")
    engine.wait_log("LINK1@h.inf skipped and left in place")
    assert greets(engine)
    assert engine.stop() in STOPPED  # SIGTERM is heard: nothing blocks the reactor
    assert "stopped;" in engine.console()
    assert sink.received() == []
    assert os.path.exists(os.path.join(retry, "FIFO1@h.inf"))
    assert os.path.islink(os.path.join(retry, "LINK1@h.dat"))
