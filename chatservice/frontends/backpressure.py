# -*- test-case-name: tests.test_backpressure -*-
"""
Back-pressure: read no more in one reactor turn than the next turn can write.

Each line read becomes a line written to every member of its room.  A turn
that reads a lot (every sender's socket full after the server fell behind,
or a paste of thousands of lines) fans out more than Twisted writes per
connection per turn (128 KiB), and the surplus piles up in memory until the
send queue's bound drops readers who did nothing wrong.  L{InputGate} closes
once this turn has handed sessions input worth L{TURN_BUDGET} bytes of output
per reader; the rest waits for the next turn.  While it is closed, stream
front-ends hold what they have read (at most one read per connection) and
stop reading their sockets; the kernel and then the senders' own TCP windows
hold the rest, so senders slow down instead of anyone being dropped.  Opening
resumes them in the order they were held.

Shared by the stream front-ends (line chat now; IRC and WebSocket next), so it
holds no chat logic and imports no front-end.
"""

from __future__ import annotations

TURN_BUDGET = 128 * 1024
"""Bytes of output one reactor turn may make for each reader, as estimated from
the input handed to sessions (each line: its length plus L{LINE_COST}).  Twisted writes
at most 128 KiB per connection per turn, so a turn within this budget can be
written by the next one."""

LINE_COST = 40
"""What a line costs beyond its own bytes: the sender's nick, a room mark and
the line end it gains on the way out (a generous estimate).  It also keeps a
flood of tiny lines within the budget: each is a line, and a UDP frame, for
every reader."""


class InputGate:
    """
    Whether stream front-ends may read input now, for the whole service.

    @param clock: an C{IReactorTime}: the turn's end is a C{callLater(0)}.
    @param budget: L{TURN_BUDGET}, smaller in tests.
    @ivar closed: whether input must wait now (an attribute, not a property:
        the hot path reads it once per line).
    """

    def __init__(self, clock, budget: int = TURN_BUDGET):
        self._clock = clock
        self._budget = budget
        self._spent = 0  # of the budget, this turn
        self._turn_end = None
        self._held: dict = {}  # held inputs, in order: input -> None
        self.closed = False

    def _update(self) -> None:
        self.closed = self._spent >= self._budget

    # -- what closes and opens it

    def left(self) -> int:
        """How much of this turn's budget is left (0 or less: none)."""
        return self._budget - self._spent

    def spend(self, amount: int) -> None:
        """C{amount} more of the budget was spent by the lines handed over."""
        self._spent += amount
        if self._spent >= self._budget:
            self.closed = True
        if self._turn_end is None:
            self._turn_end = self._clock.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._turn_end = None
        self._spent = 0
        self._update()
        self._open()

    # -- inputs waiting for it

    def hold(self, source) -> None:
        """C{source} has input waiting: call its C{gate_opened()} when the gate opens."""
        self._held[source] = None

    def forget(self, source) -> None:
        """C{source} is gone."""
        self._held.pop(source, None)

    def _open(self) -> None:
        """Resume held inputs, oldest first, while the gate stays open."""
        while self._held and not self.closed:
            source = next(iter(self._held))
            del self._held[source]
            source.gate_opened()
