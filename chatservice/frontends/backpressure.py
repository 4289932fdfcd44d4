# -*- test-case-name: tests.test_backpressure -*-
"""
Back-pressure: stop reading senders while output is behind.

Each line read becomes a line written to every member of its room, so a
server that reads faster than it writes piles output up in memory, and then
drops readers who did nothing wrong as "too slow to read".  That happens when
the server itself falls behind (all its CPU goes to reading and fanning out)
and when one reactor turn reads so much that its fan-out exceeds what one turn
can write (Twisted writes at most 128 KiB per connection per turn).  The cure
is to read less: L{InputGate} closes while

 - a reader's output waits beyond the kernel's and Twisted's own buffers (its
   L{SendQueue} is paused), until it catches up or has been waited for
   L{READER_WAIT} seconds (a reader that reads nothing for that long is not
   slow because of us: it no longer holds the others back, and
   C{--max-backlog} decides its fate); or
 - this turn has already handed sessions input worth L{TURN_BUDGET} bytes of
   output per reader: the rest waits for the next turn, so one turn's
   fan-out stays within what the next can write.

While the gate is closed, stream front-ends hold what they have read (at most
one read per connection) and stop reading their sockets; the kernel and then
the senders' own TCP windows hold the rest, and senders slow down instead of
anyone being dropped.  Reopening resumes them in the order they were held.

Shared by the stream front-ends (line chat now; IRC and WebSocket next), so it
holds no chat logic and imports no front-end.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

TURN_BUDGET = 128 * 1024
"""Bytes of output one reactor turn may make for each reader, as estimated from
the input handed to sessions (L{cost}); give or take one read.  Twisted writes
at most 128 KiB per connection per turn, so a turn within this budget can be
written by the next one."""

LINE_COST = 40
"""What a line costs beyond its own bytes: the sender's nick, a room mark and
the line end it gains on the way out (a generous estimate).  It also keeps a
flood of tiny lines within the budget: each is a line, and a UDP frame, for
every reader."""

READER_WAIT = 1.0
"""Seconds the gate stays closed for one reader whose output is queued.  A
reader on a live connection catches up in far less once no more input is read
for it; one that has not by then is stalled or on a link too slow for the
room, and the room does not wait for it longer."""


def cost(line: bytes) -> int:
    """What handing C{line} to a session spends of the turn's budget."""
    return len(line) + LINE_COST


class InputGate:
    """
    Whether stream front-ends may read input now, for the whole service.

    @param clock: an C{IReactorTime}: the turn's end is a C{callLater(0)},
        and readers are waited for at most L{READER_WAIT} seconds.
    @param budget: L{TURN_BUDGET}, smaller in tests.
    @param reader_wait: L{READER_WAIT}, shorter in tests.
    @ivar closed: whether input must wait now (an attribute, not a property:
        the hot path reads it once per line).
    """

    log = Logger()

    def __init__(self, clock, budget: int = TURN_BUDGET, reader_wait: float = READER_WAIT):
        self._clock = clock
        self._budget = budget
        self._reader_wait = reader_wait
        self._spent = 0  # of the budget, this turn
        self._turn_end = None
        self._reopen = None  # a callLater(0) that resumes held inputs
        self._behind: dict = {}  # output queue -> IDelayedCall that stops waiting for it
        self._held: dict = {}  # held inputs, in order: input -> None
        self.closed = False

    def _update(self) -> None:
        self.closed = bool(self._behind) or self._spent >= self._budget

    # -- what closes and opens it

    def left(self) -> int:
        """How much of this turn's budget is left (0 or less: none)."""
        return self._budget - self._spent

    def spend(self, amount: int) -> None:
        """C{amount} more of the budget was spent (L{cost} of the lines handed over)."""
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

    def _open_soon(self) -> None:
        """Resume held inputs on the next turn, not from inside whatever
        called us (a delivery in the middle of the hub's fan-out, say)."""
        if self._held and self._reopen is None:
            self._reopen = self._clock.callLater(0, self._reopened)

    def _reopened(self) -> None:
        self._reopen = None
        self._open()

    def behind(self, queue) -> None:
        """C{queue}'s output waits in memory (its transport is full).  Called
        again after it drained and filled up again, which is progress: the
        reader is waited for another L{READER_WAIT} seconds.

        @param queue: any hashable with a C{name} for the logs.
        """
        call = self._behind.get(queue)
        if call is not None and call.active():
            call.cancel()
        self._behind[queue] = self._clock.callLater(self._reader_wait, self._stalled, queue)
        self.closed = True

    def caught_up(self, queue) -> None:
        """C{queue} is flowing again, or gone."""
        call = self._behind.pop(queue, None)
        if call is not None:
            if call.active():
                call.cancel()
            self._update()
            self._open_soon()

    def _stalled(self, queue) -> None:
        if self._behind.pop(queue, None) is not None:
            self.log.warn(
                "{who} has not caught up on its output within {wait}s; not holding input"
                " back for it any longer",
                who=queue.name, wait=self._reader_wait,
            )
            self._update()
            self._open_soon()

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

    def stop(self) -> None:
        """Cancel every timer (the service is stopping)."""
        for call in self._behind.values():
            if call.active():
                call.cancel()
        self._behind.clear()
        for call in (self._turn_end, self._reopen):
            if call is not None and call.active():
                call.cancel()
        self._turn_end = self._reopen = None
        self._update()


@implementer(IPushProducer)
class SendQueue:
    """
    A user's unsent output, bounded.

    The transport pauses us when its own buffer is full (Twisted's
    producer/consumer machinery); from then on output waits here, the
    L{InputGate} holds input back until it drains, and once it passes C{limit}
    bytes anyway (a reader that stopped reading) the user is too slow to read
    and C{overflow} is called.  Fast readers never wait on this.

    @ivar name: who this is, for logs.
    """

    def __init__(self, transport, limit: int, overflow, gate: InputGate, name: str) -> None:
        self._transport = transport
        self._limit = limit
        self._overflow = overflow
        self._gate = gate
        self.name = name
        self._chunks: list[bytes] = []
        self._size = 0
        self._paused = False
        self._overflowed = False

    @property
    def size(self) -> int:
        """Bytes waiting here (not counting the transport's own buffer)."""
        return self._size

    def write(self, data: bytes) -> None:
        """Send C{data} now, or queue it while the transport is full."""
        if not self._paused and not self._chunks:
            self._transport.write(data)
            return
        if self._overflowed:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._limit and self._size > self._limit:
            self._overflowed = True
            self._chunks, self._size = [], 0
            self._gate.caught_up(self)
            self._overflow()

    def flush(self) -> None:
        """Hand everything queued to the transport, paused or not (for closing)."""
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks, self._size = [], 0
            self._transport.write(data)

    def pauseProducing(self) -> None:
        self._paused = True
        if not self._overflowed:
            self._gate.behind(self)

    def resumeProducing(self) -> None:
        self._paused = False
        self.flush()
        if not self._paused:
            self._gate.caught_up(self)

    def stopProducing(self) -> None:
        self._chunks, self._size = [], 0
        self._gate.caught_up(self)
