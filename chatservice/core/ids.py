# -*- test-case-name: tests.test_ids -*-
"""Message ids: unique, increasing, and issued by several nodes without coordination.

An id is a 63-bit integer shaped like a Snowflake id::

    milliseconds since 2020-01-01 UTC (41 bits) | node (10 bits) | sequence (12 bits)

so ids sort by time first, two nodes never issue the same id (their node
parts differ), and one node issues up to 4096 ids per millisecond.  When the
clock stands still, or steps back (an NTP correction), or a millisecond's
4096 ids are used up, the generator borrows the next millisecond instead of
waiting: ids stay increasing on each node, and run at most a little ahead
of the clock.
"""

EPOCH = 1577836800.0  # 2020-01-01T00:00:00Z
NODE_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
_SEQUENCE_MASK = (1 << SEQUENCE_BITS) - 1
_TIME_SHIFT = NODE_BITS + SEQUENCE_BITS


class IdGenerator:
    """
    Issues the ids of one node.

    @param clock: an C{IReactorTime}; its C{seconds()} gives the time part.
    @param node: this node's number, 0 to L{MAX_NODE}.
    """

    def __init__(self, clock, node: int = 0) -> None:
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node must be 0 to {MAX_NODE}, not {node}")
        self._clock = clock
        self._node = node
        self._last = -1  # the last id issued

    def next(self) -> int:
        """A new id, greater than every id this generator issued or was told of."""
        millis = int((self._clock.seconds() - EPOCH) * 1000)
        candidate = (millis << _TIME_SHIFT) | (self._node << SEQUENCE_BITS)
        if candidate <= self._last:
            last_millis = self._last >> _TIME_SHIFT
            sequence = (self._last & _SEQUENCE_MASK) + 1
            if sequence > _SEQUENCE_MASK:
                last_millis, sequence = last_millis + 1, 0
            candidate = (last_millis << _TIME_SHIFT) | (self._node << SEQUENCE_BITS) | sequence
        self._last = candidate
        return candidate

    def advance_past(self, seen: int) -> None:
        """Never issue C{seen} or anything below it (the newest id in the history at start)."""
        # Another node's id in the same millisecond may sort above ours: skip past the
        # whole millisecond, so what we issue next is above C{seen} whatever its node.
        floor = ((seen >> _TIME_SHIFT) << _TIME_SHIFT) | (self._node << SEQUENCE_BITS) | _SEQUENCE_MASK
        if floor > self._last:
            self._last = floor


def id_time(message_id: int) -> float:
    """The time, in seconds since the epoch, at which C{message_id} was issued (to the ms)."""
    return EPOCH + (message_id >> _TIME_SHIFT) / 1000
