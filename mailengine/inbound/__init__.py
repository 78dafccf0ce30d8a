"""Receiving: the twisted.mail ESMTP server, glue between the wire, policy and the queue."""
