# -*- test-case-name: tests.test_batch -*-
"""The end of the turn: everything published during one reactor turn, handed out once.

Fan-out is the hot path.  Events published during a turn are collected, and
at the end of the turn each recipient gets one C{deliver(batch)} with what it
should see, in publication order.  A batch is made of slices of runs of
events shared with other recipients (L{Shared}): everyone in one room who sees
the same thing gets the very same batch, a sender gets the room's run with
its own lines cut out (a few slices: the cost is in its own lines, not in the
turn's), and a front-end encodes each shared run once and cuts bytes for each
recipient.  Sinks (history, metrics) get the stored events after the members.
"""

from bisect import bisect_left
from heapq import merge

from twisted.internet import defer
from twisted.logger import Logger

from chatservice.core.events import STORED_EVENTS


class Shared:
    """
    A run of events that several recipients see.

    @ivar encoded: a front-end's cache of this run's encoding, keyed as the
        front-end likes (by how it renders); it lives as long as the run does,
        one turn, so it never needs clearing.
    """

    __slots__ = ("events", "encoded")

    def __init__(self, events: tuple) -> None:
        self.events = events
        self.encoded: dict = {}

    def __len__(self) -> int:
        return len(self.events)


class Batch:
    """
    What one recipient sees of one turn: C{parts} is a tuple of
    (L{Shared}, start, stop) slices, in order.  Iterating gives the events.
    """

    __slots__ = ("parts",)

    def __init__(self, parts: tuple) -> None:
        self.parts = parts

    @classmethod
    def of(cls, events) -> "Batch":
        """A batch of C{events} shared with nobody (replies, tests)."""
        events = tuple(events)
        return cls(((Shared(events), 0, len(events)),))

    def __iter__(self):
        for shared, start, stop in self.parts:
            yield from shared.events[start:stop]

    def __len__(self) -> int:
        return sum(stop - start for _, start, stop in self.parts)

    @property
    def events(self) -> tuple:
        """The events, as one tuple."""
        parts = self.parts
        if len(parts) == 1:
            shared, start, stop = parts[0]
            if start == 0 and stop == len(shared.events):
                return shared.events
        return tuple(self)

    def __repr__(self) -> str:
        return f"Batch({list(self)!r})"


class _RoomRun:
    """One room's events this turn: their global indices, then the shared run."""

    __slots__ = ("indices", "shared", "batch")

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.shared = None
        self.batch = None


class Turn:
    """
    Collects one turn's events and hands them out at its end.

    @param clock: an C{IReactorTime}; the end of the turn is a C{callLater(0)}.
    @param rooms_of: the hub's map of participant to the rooms it is in
        (read, never changed, here).
    @param sinks: L{IEventSink}s; they get each stored event after the members.
    @param on_failure: called with a participant whose C{deliver} raised,
        after everyone else has had this turn.
    @param deliveries: a dict of transport to events handed out, counted here.
    """

    log = Logger()

    def __init__(self, clock, rooms_of: dict, sinks=(), on_failure=None,
                 deliveries: dict | None = None) -> None:
        self._clock = clock
        self._deliveries = deliveries if deliveries is not None else {}
        self._rooms_of = rooms_of
        self.sinks = list(sinks)
        self._on_failure = on_failure
        self._call = None
        self._reset()
        # participant -> {room: events held back while its history replays}; lasts across turns
        self._holding: dict = {}

    def _reset(self) -> None:
        self._events: list = []
        self._runs: dict = {}  # room -> _RoomRun
        self._excluded: dict = {}  # participant -> [global index] it does not see
        self._only: dict = {}  # participant -> [global index] only it sees
        self._windows: dict = {}  # participant -> {room: [start, stop, ...]} (joined/parted)
        self._gone: set = set()  # participants served for good (L{flush_to})
        self._stored: list = []  # events for the sinks, in order
        self._after: list = []  # calls to make once this turn is handed out

    # -- publishing --------------------------------------------------------

    def publish(self, event, room, exclude=None) -> None:
        """C{event} for every member of C{room} but C{exclude}."""
        index = len(self._events)
        self._events.append(event)
        run = self._runs.get(room)
        if run is None:
            run = self._runs[room] = _RoomRun()
        run.indices.append(index)
        if exclude is not None:
            excluded = self._excluded.get(exclude)
            if excluded is None:
                self._excluded[exclude] = [index]
            else:
                excluded.append(index)
        if type(event) in STORED_EVENTS:
            self._stored.append(event)
        self._schedule()

    def publish_to(self, event, audience) -> None:
        """C{event} for each of C{audience} once (a user event across several rooms)."""
        index = len(self._events)
        self._events.append(event)
        for participant in audience:
            self._add_only(participant, index)
        if type(event) in STORED_EVENTS:
            self._stored.append(event)
        self._schedule()

    def tell(self, participant, event) -> None:
        """C{event} for C{participant} alone."""
        index = len(self._events)
        self._events.append(event)
        self._add_only(participant, index)
        self._schedule()

    def record(self, event) -> None:
        """C{event} for the sinks only (a leave during shutdown, which nobody is shown)."""
        self._stored.append(event)
        self._schedule()

    def then(self, call) -> None:
        """Call C{call()} at the end of this turn, after the members and the sinks."""
        self._after.append(call)
        self._schedule()

    def _add_only(self, participant, index: int) -> None:
        only = self._only.get(participant)
        if only is None:
            self._only[participant] = [index]
        else:
            only.append(index)

    # -- membership changes within the turn --------------------------------

    def joined(self, participant, room) -> None:
        """C{participant} joins C{room} now: it sees the room's events from here on."""
        windows = self._windows.setdefault(participant, {})
        windows.setdefault(room, []).extend((len(self._events), None))

    def parted(self, participant, room) -> None:
        """C{participant} leaves C{room} now: it saw the room's events up to here."""
        windows = self._windows.setdefault(participant, {})
        spans = windows.get(room)
        if spans and spans[-1] is None:
            spans[-1] = len(self._events)
        elif not spans:  # a member since before this turn
            windows[room] = [0, len(self._events)]

    # -- holding a room back while its history replays ---------------------

    def hold(self, participant, room) -> None:
        """Keep C{room}'s events from C{participant} until L{release}."""
        self._holding.setdefault(participant, {})[room] = []

    def holding(self, participant, room) -> bool:
        """Whether C{room} is held back from C{participant}."""
        return room in self._holding.get(participant, ())

    def release(self, participant, room) -> list:
        """
        Stop holding C{room} back; return what was held, in order, for the
        caller to L{tell} C{participant}.

        That includes C{room}'s events of this turn so far that C{participant}
        would see: they were held too (the hold is decided at the end of the
        turn), and handing them out from the shared run would put them
        before the older held events told now.  They are cut from its view.
        """
        rooms = self._holding.get(participant)
        if rooms is None or room not in rooms:
            return []
        held = rooms.pop(room)
        if not rooms:
            del self._holding[participant]
        run = self._runs.get(room)
        if run is not None:
            spans = self._windows.get(participant, {}).get(room) or (0, None)
            excluded = self._excluded.setdefault(participant, [])
            seen = set(excluded)
            for first, stop in zip(spans[0::2], spans[1::2]):
                lo = bisect_left(run.indices, first)
                hi = len(run.indices) if stop is None else bisect_left(run.indices, stop)
                for index in run.indices[lo:hi]:
                    if index not in seen:
                        held.append(self._events[index])
                        excluded.append(index)
        return held

    # -- handing out -------------------------------------------------------

    def _schedule(self) -> None:
        if self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def forget(self, participant) -> None:
        """C{participant} is gone: nothing more for it, this turn or later."""
        self._holding.pop(participant, None)
        self._excluded.pop(participant, None)
        self._only.pop(participant, None)
        self._windows.pop(participant, None)
        if self._events:
            self._gone.add(participant)

    def flush_to(self, participant) -> None:
        """Hand C{participant}, which is about to go, what this turn owes it now."""
        if self._events and participant not in self._gone:
            view = self._slow_view(
                participant, self._runs, self._events, self._excluded, self._only,
                self._windows,
            )
            if view:
                self._deliver(participant, Batch.of(view))
        self.forget(participant)

    def flush(self) -> None:
        """The end of the turn: one C{deliver} per recipient, then the sinks."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        events, runs, stored = self._events, self._runs, self._stored
        excluded, only, windows, gone = self._excluded, self._only, self._windows, self._gone
        after = self._after
        self._reset()
        if events:
            self._hand_out(events, runs, excluded, only, windows, gone)
        if stored:
            stored = tuple(stored)
            for sink in self.sinks:
                self._record(sink, stored)
        for call in after:
            try:
                call()
            except Exception:
                self.log.failure("An end-of-turn call failed")

    def _hand_out(self, events, runs, excluded, only, windows, gone) -> None:
        rooms_of = self._rooms_of
        for run in runs.values():
            run.shared = Shared(tuple([events[i] for i in run.indices]))
            run.batch = Batch(((run.shared, 0, len(run.indices)),))
        holding = self._holding
        special = dict.fromkeys(excluded)
        special.update(dict.fromkeys(only))
        special.update(dict.fromkeys(windows))
        special.update(dict.fromkeys(holding))
        for participant in gone:
            special[participant] = None
        merged: dict = {}  # rooms signature -> (Shared, indices)
        failed = []
        seen: set = set()
        for room, run in runs.items():
            batch = run.batch
            for member in tuple(room.members):  # a delivery may end a session
                if member in special:
                    continue
                rooms = rooms_of.get(member, ())
                if len(rooms) == 1:
                    view = batch
                else:
                    if member in seen:
                        continue
                    seen.add(member)
                    signature = tuple([r for r in rooms if r in runs])
                    if len(signature) == 1:
                        view = batch
                    else:
                        shared, _ = self._merged(signature, runs, events, merged)
                        view = Batch(((shared, 0, len(shared.events)),))
                if not self._deliver(member, view):
                    failed.append(member)
        for participant in special:
            if participant in gone:
                continue
            if participant in windows or participant in holding:
                view = self._slow_view(participant, runs, events, excluded, only, windows)
                batch = Batch.of(view) if view else None
            else:
                batch = self._cut_view(participant, runs, events, excluded, only, merged)
            if batch is not None and not self._deliver(participant, batch):
                failed.append(participant)
        for participant in failed:
            if self._on_failure is not None:
                self._on_failure(participant)

    def _merged(self, signature, runs, events, merged):
        """The run of several rooms' events together, in order, built once per turn."""
        hit = merged.get(signature)
        if hit is None:
            indices = list(merge(*[runs[room].indices for room in signature]))
            hit = merged[signature] = (Shared(tuple([events[i] for i in indices])), indices)
        return hit

    def _cut_view(self, participant, runs, events, excluded, only, merged):
        """
        A sender's (or a private line's recipient's) view: the shared run of
        its rooms with its own lines cut out and its own entries put in, in
        slices, so the cost is in its own entries, not in the turn.
        """
        rooms = self._rooms_of.get(participant, ())
        signature = tuple([room for room in rooms if room in runs])
        if not signature:
            shared, indices = None, []
        elif len(signature) == 1:
            run = runs[signature[0]]
            shared, indices = run.shared, run.indices
        else:
            shared, indices = self._merged(signature, runs, events, merged)
        cuts = []  # (global index, kind): kind 0 drops a shared entry, 1 inserts an own one
        for index in excluded.get(participant, ()):
            cuts.append((index, 0))
        for index in only.get(participant, ()):
            cuts.append((index, 1))
        cuts.sort()
        parts = []
        position = 0
        for index, kind in cuts:
            at = bisect_left(indices, index)
            if kind == 0:
                if at < len(indices) and indices[at] == index:
                    if at > position:
                        parts.append((shared, position, at))
                    position = at + 1
            else:
                if at > position:
                    parts.append((shared, position, at))
                    position = at
                parts.append((Shared((events[index],)), 0, 1))
        if shared is not None and position < len(indices):
            parts.append((shared, position, len(indices)))
        return Batch(tuple(parts)) if parts else None

    def _slow_view(self, participant, runs, events, excluded, only, windows) -> tuple:
        """
        The view of a participant whose rooms changed within the turn, or
        whose rooms are held back, computed entry by entry (rare: joins,
        parts, replays and leaves, not lines).  Held rooms' events go to the
        holding list instead.
        """
        spans_of = windows.get(participant, {})
        holding = self._holding.get(participant, {})
        drop = set(excluded.get(participant, ()))
        visible = list(only.get(participant, ()))
        for room in set(self._rooms_of.get(participant, ())) | set(spans_of):
            run = runs.get(room)
            if run is None:
                continue
            spans = spans_of.get(room) or (0, None)
            picked = []
            for first, stop in zip(spans[0::2], spans[1::2]):
                lo = bisect_left(run.indices, first)
                hi = len(run.indices) if stop is None else bisect_left(run.indices, stop)
                picked.extend(run.indices[lo:hi])
            if room in holding:
                holding[room].extend(events[i] for i in picked if i not in drop)
            else:
                visible.extend(picked)
        return tuple(events[i] for i in sorted(set(visible)) if i not in drop)

    def _deliver(self, participant, batch) -> bool:
        try:
            deliveries, via = self._deliveries, participant.via
            parts = batch.parts
            size = parts[0][2] - parts[0][1] if len(parts) == 1 else len(batch)
            deliveries[via] = deliveries.get(via, 0) + size
            participant.deliver(batch)
        except Exception:
            self.log.failure(
                "Delivery to {nick} failed", nick=getattr(participant, "nick", None)
            )
            return False
        return True

    def _record(self, sink, events: tuple) -> None:
        try:
            result = sink.record_turn(events)
        except Exception:
            self.log.failure("Sink {sink!r} lost {count} events", sink=sink, count=len(events))
            return
        if isinstance(result, defer.Deferred):
            result.addErrback(
                lambda failure: self.log.failure(
                    "Sink {sink!r} lost {count} events", failure, sink=sink, count=len(events)
                )
            )
