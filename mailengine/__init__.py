"""MailEngine: a high-volume relay MTA on Twisted (a re-creation of the MailEngine 2 manual)."""

__version__ = "2.0.0"

from mailengine.queue.enqueue import enqueue  # the manual's sendMessage

__all__ = ["__version__", "enqueue"]
