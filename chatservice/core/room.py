# -*- test-case-name: tests.test_room -*-
"""The room: who is in it, and fan-out of events to them and to sinks.

Fan-out is the hot path.  Events published during one reactor turn are
collected and handed out once, at the end of the turn: everyone who sees the
same thing gets the very same tuple (so a transport encodes it once for all),
and only the few users whose view differs (senders, new arrivals, recipients
of a private line or a notice) get a tuple of their own.
"""

from itertools import islice

from twisted.internet import defer
from twisted.logger import Logger

from chatservice.core.events import ROOM_EVENTS, Joined, Left, Private, PrivateSent, Renamed
from chatservice.core.errors import NoSuchUser
from chatservice.core.names import fold as casefold

#: The welcome line names at most this many people; /who names everyone.
WELCOME_NAMES = 20


class _Entry:
    """One published event: for everyone but C{exclude}, or only for C{only}."""

    __slots__ = ("event", "exclude", "only")

    def __init__(self, event, exclude=None, only=None):
        self.event = event
        self.exclude = exclude
        self.only = only


class Room:
    """
    One chat room: membership by folded nick, and ordered fan-out.

    @param clock: an C{IReactorTime}; the end-of-turn flush is a
        C{callLater(0, ...)} on it.
    @param sinks: L{IEventSink}s that get every room-wide event after the members.
    """

    log = Logger()

    def __init__(self, clock, sinks=()) -> None:
        self._clock = clock
        self._sinks = list(sinks)
        self._members: dict[object, None] = {}  # in joining order
        self._by_nick: dict[str, object] = {}  # folded nick -> member
        self._present: dict[object, None] = {}
        self._pending: list[_Entry] = []
        self._joined_at: dict[object, int] = {}
        self._flush_call = None
        self.closing = False

    # -- membership -----------------------------------------------------

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, participant) -> bool:
        nick = getattr(participant, "nick", None)
        return nick is not None and self._by_nick.get(casefold(nick)) is participant

    def members(self) -> list:
        """Everyone in the room, in the order they joined."""
        return list(self._members)

    def find(self, nick: str):
        """The member called C{nick} (any case), or None."""
        return self._by_nick.get(casefold(nick))

    def enter(self, participant) -> None:
        """Note a connected user, joined or not, so shutdown can say goodbye to it."""
        self._present[participant] = None

    def exit(self, participant) -> None:
        """Forget a user who is gone; call after L{leave} for members."""
        self._present.pop(participant, None)
        self._joined_at.pop(participant, None)

    @property
    def connected(self) -> int:
        """How many users are connected, joined or not."""
        return len(self._present)

    def join(self, participant) -> None:
        """Add C{participant} (its nick already reserved) and tell the others."""
        self._members[participant] = None
        self._by_nick[casefold(participant.nick)] = participant
        self._joined_at[participant] = len(self._pending)
        self._schedule()
        self.log.info("{nick} joined via {via}", nick=participant.nick, via=participant.via)
        self.publish(Joined(participant.nick, participant.via), exclude=participant)

    def welcome_text(self, participant) -> str:
        """The welcome notice: who you are and who is online."""
        online = len(self._members)
        names = islice(self._members, WELCOME_NAMES)
        shown = ", ".join(member.nick for member in names)
        if online > WELCOME_NAMES:
            shown += f" and {online - WELCOME_NAMES} more (/who lists all)"
        return f"you are {participant.nick}; {online} online: {shown}"

    def rename(self, participant, old: str, new: str) -> None:
        """Re-key C{participant} from C{old} to C{new} and tell everyone."""
        del self._by_nick[casefold(old)]
        self._by_nick[casefold(new)] = participant
        self.log.info("{old} is now known as {new}", old=old, new=new)
        self.publish(Renamed(old, new))

    def leave(self, participant, reason: str) -> None:
        """
        Remove C{participant} and tell the others why.

        What this turn still owed the leaver is handed over first, so a
        goodbye written right after never overtakes earlier lines.
        """
        self.flush_to(participant)
        if participant not in self:
            return
        del self._by_nick[casefold(participant.nick)]
        del self._members[participant]
        self._joined_at.pop(participant, None)
        self.log.info("{nick} left ({reason})", nick=participant.nick, reason=reason)
        if not self.closing:  # on shutdown everyone gets the one notice, not N-1 leaves
            self.publish(Left(participant.nick, reason))

    # -- publishing -----------------------------------------------------

    def publish(self, event, exclude=None) -> None:
        """Send a room-wide C{event} to every member but C{exclude}, then to sinks."""
        self._pending.append(_Entry(event, exclude=exclude))
        self._schedule()
        if type(event) in ROOM_EVENTS:
            for sink in self._sinks:
                self._record(sink, event)

    def tell(self, participant, event) -> None:
        """Send C{event} to C{participant} alone (member or not yet)."""
        self._pending.append(_Entry(event, only=participant))
        self._schedule()

    def private(self, sender, nick: str, text: str) -> None:
        """
        Send C{text} from C{sender} to the member called C{nick}, and show
        the sender what went where.

        @raise NoSuchUser: nobody here is called C{nick}.
        """
        recipient = self.find(nick)
        if recipient is None:
            raise NoSuchUser(f"no such user: {nick}")
        self.tell(recipient, Private(sender.nick, recipient.nick, text))
        self.tell(sender, PrivateSent(recipient.nick, text))

    def who(self) -> list[tuple[str, str]]:
        """(nick, via) for everyone online, in joining order."""
        return [(member.nick, member.via) for member in self._members]

    def _record(self, sink, event) -> None:
        d = defer.maybeDeferred(sink.record, event)
        d.addErrback(
            lambda failure: self.log.failure(
                "Sink {sink!r} lost {event!r}", failure, sink=sink, event=event
            )
        )

    # -- the end-of-turn flush -------------------------------------------

    def _schedule(self) -> None:
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self.flush)

    def _view(self, participant, entries, start=0) -> tuple:
        """What C{participant} sees of C{entries}: its own lines left out."""
        is_member = participant in self
        return tuple(
            entry.event
            for index, entry in enumerate(entries)
            if entry.only is participant
            or (
                index >= start
                and entry.only is None
                and is_member
                and entry.exclude is not participant
            )
        )

    def flush_to(self, participant) -> None:
        """Hand C{participant} what this turn owes it now, and forget it for the turn."""
        if not self._pending:
            return
        start = self._joined_at.get(participant, 0)
        view = self._view(participant, self._pending, start)
        for entry in self._pending:
            if entry.only is participant:
                entry.only = _DELIVERED
        self._joined_at[participant] = len(self._pending)
        if view:
            self._deliver(participant, view)

    def flush(self) -> None:
        """Deliver everything published this turn: one call per recipient."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        pending, self._pending = self._pending, []
        joined_at, self._joined_at = self._joined_at, {}
        if not pending:
            return
        special = {}
        shared = []
        for entry in pending:
            if entry.only is not None:
                special[entry.only] = None
            else:
                shared.append(entry.event)
                if entry.exclude is not None:
                    special[entry.exclude] = None
        for participant in joined_at:
            special[participant] = None
        shared = tuple(shared)
        failed = []
        for member in list(self._members):
            if member in special:
                continue
            if shared and not self._deliver(member, shared):
                failed.append(member)
        for participant in special:
            if participant is _DELIVERED:
                continue
            view = self._view(participant, pending, joined_at.get(participant, 0))
            if view and not self._deliver(participant, view):
                failed.append(participant)
        for participant in failed:
            self._drop_failed(participant)

    def _deliver(self, participant, events) -> bool:
        try:
            participant.deliver(events)
        except Exception:
            self.log.failure(
                "Delivery to {nick} failed", nick=getattr(participant, "nick", None)
            )
            return False
        return True

    def _drop_failed(self, participant) -> None:
        """Drop a user whose delivery raised; the others keep their order."""
        self.leave(participant, "delivery failed")
        d = defer.maybeDeferred(participant.close, "internal error, disconnecting")
        d.addErrback(lambda f: self.log.failure("Closing a failed user", f))

    # -- shutdown ----------------------------------------------------------

    def close_all(self, reason: str) -> defer.Deferred:
        """
        Flush, then close every connected user, joined or not, with C{reason}.

        @return: a Deferred firing once all are gone; it never fails.
        """
        self.closing = True
        self.flush()
        closing = [
            defer.maybeDeferred(participant.close, reason)
            for participant in list(self._present)
        ]
        return defer.DeferredList(closing, consumeErrors=True)


class _Delivered:
    """Marks a private entry already handed over by L{Room.flush_to}."""

    def __repr__(self) -> str:
        return "<delivered>"


_DELIVERED = _Delivered()
