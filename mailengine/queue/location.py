"""Where the live queue holds a message (``QueuedMessage.location``).

String-valued: the names appear in the queue's counts (the stats lines and the
web's dashboard), so they read as before.
"""

from __future__ import annotations

from enum import StrEnum


class Location(StrEnum):
    MEMORY = "memory"  # data in memory, no copy on disk
    JOURNAL = "journal"  # in memory, its safe copy in the receipt journal
    WORKING = "working"  # files in working/ (waited long, or being sent)
    RETRY = "retry"  # in retry/, data on disk
    RESERVED = "reserved"  # memory reserved while its incoming/ copy is written
    MOVING = "moving"  # being written to retry/ from memory or working/
    OFFLOADING = "offloading"  # being written to retry/ at intake (memory full)
    HOLDING = "holding"  # being written to hold/ by an operator; left alone meanwhile


# Data in memory (working: its files too); what a stop writes back to retry/.
IN_MEMORY = frozenset({Location.MEMORY, Location.JOURNAL, Location.WORKING})
# In the middle of a write: no operator action until it lands.
BUSY = frozenset({Location.HOLDING, Location.MOVING, Location.RESERVED, Location.OFFLOADING})
