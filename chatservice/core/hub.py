# -*- test-case-name: tests.test_hub -*-
"""The hub: everything server-wide.

Who is connected (presence, so shutdown can say goodbye to everyone), who is
called what (the directory), which rooms exist and who is in each, message
ids and times, the end-of-turn batch (L{chatservice.core.batch.Turn}) and
history replays.  Sessions call it; front-ends never do.
"""

from twisted.internet import defer
from twisted.logger import Logger

from chatservice.core.batch import Turn
from chatservice.core.commands import HISTORY_MAX
from chatservice.core.errors import (
    InvalidRoom,
    NoSuchRoom,
    NoSuchUser,
    NotInRoom,
    TooLong,
    TooManyRooms,
    Unavailable,
)
from chatservice.core.events import (
    Emote,
    HistoryEnd,
    HistoryStart,
    Joined,
    Left,
    Parted,
    Private,
    PrivateSent,
    Refusal,
    Renamed,
    Replayed,
    Said,
    TagMessage,
    TopicChanged,
)
from chatservice.core.ids import IdGenerator
from chatservice.core.limits import Limits
from chatservice.core.names import ROOM_NAME_MAX, fold, is_room_name
from chatservice.core.rooms import Room
from chatservice.core.stats import Stats, disconnect_kind

#: Seconds a history query has to answer before the replay is given up
#: (the room's live lines, held back meanwhile, are then shown).
REPLAY_TIMEOUT = 10.0
#: The most lines a returning client is shown on joining a room it names a last id for
#: (L{Hub.join}'s C{since}); it asks for the rest with history requests (C{after}).
RESUME_MAX = 1000
#: How many spellings of room names L{Hub.room} remembers before starting again.
_SPELLINGS = 4096


class Hub:
    """
    The server-wide state of one service.

    @param clock: an C{IReactorTime}, for the end of the turn, ids and times.
    @param limits: the service's L{Limits} (C{max_rooms}, C{max_rooms_per_user}).
    @param default_room: where every line-protocol user lands on joining.
    @param history: an L{IHistoryStore} to replay from and record to, or None.
    @param replay: how many lines a join replays (0: none).
    @param sinks: other L{IEventSink}s (metrics, a bridge).
    @param ids: an L{IdGenerator}; one for node 0 on C{clock} if None.
    @param stats: the L{Stats} to count in (metrics read it); a new one if None.
    """

    log = Logger()

    def __init__(self, clock, limits: Limits = Limits(), default_room: str = "#lobby",
                 history=None, replay: int = 20, sinks=(), ids: IdGenerator | None = None,
                 stats: Stats | None = None):
        if not is_room_name(default_room):
            raise ValueError(f"not a room name: {default_room!r}")
        self._clock = clock
        self._limits = limits
        self._history = history
        self._replay = replay if history is not None else 0
        self._ids = ids if ids is not None else IdGenerator(clock)
        self._sessions: dict = {}  # participant -> session, everyone connected
        self._by_nick: dict = {}  # folded nick -> participant, everyone joined
        self._rooms: dict = {}  # folded room name -> Room
        self._spellings: dict = {}  # a room's name as users typed it -> Room (a cache)
        self._rooms_of: dict = {}  # participant -> [Room], in joining order
        self._transport_of: dict = {}  # participant -> its via, as it arrived (for stats)
        self._replays: dict = {}  # (participant, room) -> the replay's Deferred
        self.stats = stats if stats is not None else Stats()
        all_sinks = ([history] if history is not None else []) + list(sinks)
        self._turn = Turn(clock, self._rooms_of, all_sinks, on_failure=self._delivery_failed,
                          deliveries=self.stats.deliveries)
        self.default_room = self._create(default_room)
        self.closing = False

    @property
    def turn(self) -> Turn:
        """The end-of-turn batch (tests and the benchmark flush it by hand)."""
        return self._turn

    @property
    def room_count(self) -> int:
        """How many rooms exist now (safe to read from another thread)."""
        return len(self._rooms)

    @property
    def ids(self) -> IdGenerator:
        return self._ids

    def _stamp(self) -> tuple[int, float]:
        return self._ids.next(), self._clock.seconds()

    # -- presence ------------------------------------------------------------

    def enter(self, participant, session) -> None:
        """Note a connected user, joined or not, so shutdown can end its session."""
        self._sessions[participant] = session

    @property
    def connected(self) -> int:
        """How many users are connected, joined or not."""
        return len(self._sessions)

    # -- the directory ---------------------------------------------------------

    def find(self, nick: str):
        """The user called C{nick} (any case), or None."""
        return self._by_nick.get(fold(nick))

    def arrive(self, participant) -> None:
        """C{participant} has its nick (reserved in the registry): list it."""
        self._by_nick[fold(participant.nick)] = participant
        self._rooms_of[participant] = []
        self._transport_of[participant] = via = participant.via
        self.stats.count(self.stats.users, via)
        self.log.info("{nick} arrived via {via} from {peer}", nick=participant.nick,
                      via=participant.via, peer=participant.peer)

    def rename(self, participant, old: str, new: str) -> None:
        """Re-key C{participant} from C{old} to C{new}; tell everyone who shares a room, once."""
        del self._by_nick[fold(old)]
        self._by_nick[fold(new)] = participant
        self.log.info("{old} is now known as {new}", old=old, new=new)
        rooms = self._rooms_of.get(participant, [])
        event = Renamed(*self._stamp(), tuple(room.name for room in rooms), old, new)
        if len(rooms) == 1:
            self._turn.publish(event, rooms[0])
        else:
            self._turn.publish_to(event, self._audience(participant, include_self=True))

    def _audience(self, participant, include_self: bool) -> dict:
        """Everyone who shares a room with C{participant}, once each."""
        audience: dict = {}
        for room in self._rooms_of.get(participant, ()):
            audience.update(room.members)
        if include_self:
            audience[participant] = None
        else:
            audience.pop(participant, None)
        return audience

    def depart(self, participant, reason: str) -> None:
        """
        C{participant}'s session has ended: hand it what this turn owed it,
        take it out of every room and the directory, and tell those who shared
        a room with it (on shutdown: only the history hears of it).
        """
        self._sessions.pop(participant, None)
        self._turn.flush_to(participant)
        rooms = self._rooms_of.pop(participant, None)
        if rooms is None:
            return  # never joined
        nick = participant.nick
        self._by_nick.pop(fold(nick), None)
        self.stats.count(self.stats.users, self._transport_of.pop(participant, None), -1)
        self.stats.count(self.stats.disconnects, disconnect_kind(reason))
        self.log.info("{nick} left ({reason})", nick=nick, reason=reason)
        audience = None if self.closing or len(rooms) < 2 else self._audience_of(rooms)
        for room in rooms:
            self._remove_member(participant, room)
        event = Left(*self._stamp(), tuple(room.name for room in rooms), nick, reason)
        if self.closing or not rooms:
            self._turn.record(event)  # on shutdown everyone gets one notice, not N-1 leaves
        elif audience is None:
            self._turn.publish(event, rooms[0])
        else:
            audience.pop(participant, None)
            self._turn.publish_to(event, audience)
        self._forget_empty(rooms)

    @staticmethod
    def _audience_of(rooms) -> dict:
        audience: dict = {}
        for room in rooms:
            audience.update(room.members)
        return audience

    # -- rooms -------------------------------------------------------------------

    def room(self, name: str) -> Room:
        """
        The room called C{name} (any case).

        @raise InvalidRoom: C{name} is not a room name.
        @raise NoSuchRoom: no such room exists now.
        """
        room = self._spellings.get(name)
        if room is not None and self._rooms.get(room.key) is room:
            return room  # IRC names the room on every line: skip the check and the fold
        key = self._check_name(name)
        room = self._rooms.get(key)
        if room is None:
            raise NoSuchRoom(f"no such room: {name}", subject=name)
        if len(self._spellings) >= _SPELLINGS:
            self._spellings.clear()
        self._spellings[name] = room
        return room

    @staticmethod
    def _check_name(name: str) -> str:
        if not is_room_name(name):
            raise InvalidRoom(
                f"not a room name: {name} (# and 1 to {ROOM_NAME_MAX} letters, digits or -_.)",
                subject=name,
            )
        return fold(name)

    def rooms_of(self, participant) -> list:
        """The rooms C{participant} is in, in joining order."""
        return list(self._rooms_of.get(participant, ()))

    def rooms(self, containing: str = "") -> tuple:
        """(name, member count, topic) of every room whose name contains
        C{containing} (ignoring ASCII case), by folded name."""
        part = fold(containing)
        return tuple(
            (room.name, len(room), room.topic)
            for key, room in sorted(self._rooms.items())
            if part in key
        )

    def _create(self, name: str) -> Room:
        room = Room(name)
        self._rooms[room.key] = room
        return room

    def join(self, participant, name: str, since: int | None = None) -> Room:
        """
        Put C{participant} in the room called C{name}, creating it if needed,
        tell its members, and replay its history to C{participant}: its last
        lines, or with C{since} (a returning client's last id there) the lines
        after that one, up to L{RESUME_MAX}.

        @return: the room (C{participant} may already have been in it).
        @raise InvalidRoom, TooManyRooms: refused.
        """
        key = self._check_name(name)
        room = self._rooms.get(key)
        rooms = self._rooms_of[participant]
        if room is not None and participant in room.members:
            return room
        if len(rooms) >= self._limits.max_rooms_per_user:
            raise TooManyRooms(
                f"you are in {len(rooms)} rooms, the most allowed: /part one first", subject=name
            )
        if room is None:
            if len(self._rooms) >= self._limits.max_rooms:
                raise TooManyRooms(
                    f"the server holds {len(self._rooms)} rooms, the most allowed: "
                    "join an existing one (/rooms)", subject=name,
                )
            room = self._create(name)
        self._turn.joined(participant, room)
        room.members[participant] = None
        rooms.append(room)
        event = Joined(*self._stamp(), room.name, participant.nick, participant.via)
        self.log.info("{nick} joined {room}", nick=participant.nick, room=room.name)
        self._turn.publish(event, room, exclude=participant)
        if since is not None and self._history is not None:
            self._start_replay(participant, room, event.id, RESUME_MAX, after=since)
        elif self._replay > 0:
            self._start_replay(participant, room, event.id, self._replay)
        return room

    def part(self, participant, room: Room, reason: str) -> None:
        """
        Take C{participant} out of C{room} and tell its members.

        @raise NotInRoom: C{participant} is not in C{room}.
        """
        if participant not in room.members:
            raise NotInRoom(f"you are not in {room.name}", subject=room.name)
        self._remove_member(participant, room)
        self._rooms_of[participant].remove(room)
        self.log.info("{nick} left {room}", nick=participant.nick, room=room.name)
        self._turn.publish(Parted(*self._stamp(), room.name, participant.nick, reason), room)
        self._forget_empty([room])

    def _remove_member(self, participant, room: Room) -> None:
        self._turn.parted(participant, room)
        del room.members[participant]
        replay = self._replays.pop((participant, room), None)
        if replay is not None:
            replay.cancel()
        for event in self._turn.release(participant, room):
            self._turn.tell(participant, event)

    def _forget_empty(self, rooms) -> None:
        """An empty room other than the default disappears (its history stays)."""
        for room in rooms:
            if not room.members and room is not self.default_room:
                self._rooms.pop(room.key, None)

    def who(self, room: Room) -> tuple:
        """(nick, via) of everyone in C{room}, in joining order."""
        return tuple((member.nick, member.via) for member in room.members)

    def set_topic(self, participant, room: Room, text: str) -> None:
        """
        Set C{room}'s topic and tell its members.

        @raise NotInRoom: only members may set it.
        @raise TooLong: C{text} is longer than C{limits.max_topic} characters.
        """
        if participant not in room.members:
            raise NotInRoom(f"you are not in {room.name}", subject=room.name)
        if len(text) > self._limits.max_topic:
            raise TooLong(
                f"topic too long ({len(text)} characters; at most {self._limits.max_topic})"
            )
        event = TopicChanged(*self._stamp(), room.name, participant.nick, text)
        room.topic, room.topic_by, room.topic_time = text, participant.nick, event.time
        self._turn.publish(event, room)

    # -- lines -------------------------------------------------------------------

    def say(self, participant, room: Room, text: str, notice: bool = False,
            tags: tuple = ()) -> None:
        """
        C{participant} says C{text} in C{room}: to everyone there but itself,
        unless it asks to see its own lines (C{participant.echo}, IRC's echo-message).
        """
        received = self.stats.received
        received[participant.via] = received.get(participant.via, 0) + 1
        self._turn.publish(
            Said(self._ids.next(), self._clock.seconds(), room.name, participant.nick, text,
                 notice, tags),
            room, exclude=None if participant.echo else participant,
        )

    def emote(self, participant, room: Room, text: str, tags: tuple = ()) -> None:
        """C{participant} does C{text} in C{room} (C{/me})."""
        self.stats.count(self.stats.received, participant.via)
        self._turn.publish(
            Emote(self._ids.next(), self._clock.seconds(), room.name, participant.nick, text,
                  tags),
            room, exclude=None if participant.echo else participant,
        )

    def private(self, sender, nick: str, text: str, notice: bool = False,
                action: bool = False, tags: tuple = ()) -> None:
        """
        Send C{text} from C{sender} to the user called C{nick}, wherever they
        are, and show the sender what went where.

        @raise NoSuchUser: nobody online is called C{nick}.
        """
        recipient = self.find(nick)
        if recipient is None:
            raise NoSuchUser(f"no such user: {nick}", subject=nick)
        self.stats.count(self.stats.received, sender.via)
        message_id, now = self._stamp()
        self._turn.tell(recipient, Private(message_id, now, sender.nick, recipient.nick, text,
                                           notice, action, tags))
        self._turn.tell(sender, PrivateSent(message_id, now, recipient.nick, text, notice,
                                            action, tags))

    def tag_room(self, participant, room: Room, tags: tuple) -> None:
        """Client-only C{tags} without text for C{room}'s members (IRC's TAGMSG)."""
        self._turn.publish(
            TagMessage(*self._stamp(), participant.nick, room.name, tags),
            room, exclude=None if participant.echo else participant,
        )

    def tag_user(self, sender, nick: str, tags: tuple) -> None:
        """
        Client-only C{tags} without text for the user called C{nick} (and the sender,
        if it wants its own messages back).

        @raise NoSuchUser: nobody online is called C{nick}.
        """
        recipient = self.find(nick)
        if recipient is None:
            raise NoSuchUser(f"no such user: {nick}", subject=nick)
        event = TagMessage(*self._stamp(), sender.nick, recipient.nick, tags)
        self._turn.tell(recipient, event)
        if sender.echo and sender is not recipient:
            self._turn.tell(sender, event)

    def tell(self, participant, event) -> None:
        """Send C{event} to C{participant} alone, in order with everything else."""
        self._turn.tell(participant, event)

    # -- history ---------------------------------------------------------------

    def _start_replay(self, participant, room: Room, before: int, limit: int,
                      after: int | None = None) -> None:
        """
        Replay C{room}'s last lines to a joiner, holding the room's live
        lines back meanwhile so they come after the replay: never lost, never
        twice (the replay stops below the join's id), never inside it.  The
        query goes after this turn's flush, so lines of this same turn are
        in the store already.
        """
        self._turn.hold(participant, room)
        d = defer.Deferred()
        self._replays[(participant, room)] = d
        d.addCallback(lambda _: self._recent(room, limit, before, after))
        d.addTimeout(REPLAY_TIMEOUT, self._clock)
        d.addCallbacks(
            self._replayed, self._replay_failed,
            callbackArgs=(participant, room), errbackArgs=(participant, room),
        )
        d.addErrback(lambda f: None if f.check(defer.CancelledError) else f)
        d.addErrback(lambda f: self.log.failure("Replaying {room} failed", f, room=room.name))
        self._turn.then(lambda: d.called or d.callback(None))

    def _recent(self, room: Room, limit: int, before: int, after: int | None):
        """Ask the store; C{after} only when given (stores before resume need not take it)."""
        if after is None:
            return self._history.recent(room.key, limit, before)
        return self._history.recent(room.key, limit, before, after)

    def _replayed(self, events, participant, room: Room) -> None:
        if self._replays.pop((participant, room), None) is None:
            return  # it left the room or the service meanwhile
        now = self._clock.seconds()
        if events:
            self.tell(participant, HistoryStart(room.name, len(events)))
            for event in events:
                self.tell(participant, Replayed(event, now))
            self.tell(participant, HistoryEnd(room.name))
        for event in self._turn.release(participant, room):
            self.tell(participant, event)

    def _replay_failed(self, failure, participant, room: Room) -> None:
        if failure.check(defer.CancelledError) and (participant, room) not in self._replays:
            return  # cancelled because it left
        self._replays.pop((participant, room), None)
        if failure.check(defer.TimeoutError):
            self.log.warn("The history of {room} did not answer within {timeout}s",
                          room=room.name, timeout=REPLAY_TIMEOUT)
        elif failure.check(Unavailable):
            pass  # a bound the store named and logged; not a bug
        else:
            self.log.failure("Reading the history of {room} failed", failure, room=room.name)
        if participant in self._sessions:
            self.tell(participant, Refusal(
                Unavailable.kind, f"the history of {room.name} is unavailable now"
            ))
        for event in self._turn.release(participant, room):
            self.tell(participant, event)

    def history(self, participant, room: Room, limit: int, before: int | None = None,
                after: int | None = None) -> defer.Deferred:
        """
        Show C{participant} the last C{limit} lines of C{room} (below the id
        C{before}, when given), or the first C{limit} after the id C{after}, on demand.

        @raise NotInRoom: only members may read it.
        @raise Unavailable: the service keeps no history.
        """
        if participant not in room.members:
            raise NotInRoom(f"you are not in {room.name}", subject=room.name)
        if self._history is None:
            raise Unavailable("this server keeps no history")
        limit = min(limit, HISTORY_MAX)  # one query must not read a whole room for anyone
        now = self._ids.next()
        before = now if before is None else min(before, now)
        d = defer.Deferred()
        d.addCallback(lambda _: self._recent(room, limit, before, after))
        d.addTimeout(REPLAY_TIMEOUT, self._clock)

        def show(events):
            if participant not in self._sessions:
                return
            now = self._clock.seconds()
            self.tell(participant, HistoryStart(room.name, len(events)))
            for event in events:
                self.tell(participant, Replayed(event, now))
            self.tell(participant, HistoryEnd(room.name))

        def failed(failure):
            if not failure.check(Unavailable):
                self.log.failure("Reading the history of {room} failed", failure, room=room.name)
            if participant in self._sessions:
                self.tell(participant, Refusal(
                    Unavailable.kind, f"the history of {room.name} is unavailable now"
                ))

        d.addCallbacks(show, failed)
        d.addErrback(lambda f: self.log.failure("Showing history failed", f))
        self._turn.then(lambda: d.called or d.callback(None))
        return d

    # -- failures and shutdown -------------------------------------------------

    def _delivery_failed(self, participant) -> None:
        """A delivery raised: end that user's session alone; the others keep their order."""
        session = self._sessions.get(participant)
        if session is not None:
            session.end("delivery failed", goodbye="internal error, disconnecting")

    def flush(self) -> None:
        """Hand out this turn's events now."""
        self._turn.flush()

    def close_all(self, reason: str) -> defer.Deferred:
        """
        End every session, joined or not, saying C{reason}; their leaves are
        recorded, not shown.

        @return: a Deferred firing once all are gone; it never fails.
        """
        self.closing = True
        self._turn.flush()
        closing = [
            defer.maybeDeferred(session.end, "server shutting down", reason)
            for session in list(self._sessions.values())
        ]
        self._turn.flush()
        return defer.DeferredList(closing, consumeErrors=True)
