# -*- test-case-name: tests.test_session -*-
"""One user's state machine: awaiting a nick, joined, gone.

Transports hand it decoded lines; it applies the chat rules through the hub
and the registry.  It never sees a socket, so every transport shares it.  It
alone ends a session: the front-end only tells it that the connection went
(L{Session.connection_lost}) and hangs up when told (C{close}).
"""

from dataclasses import replace
from itertools import islice

from twisted.internet import defer
from twisted.logger import Logger

from chatservice.core import commands
from chatservice.core.commands import (
    Call, Help, History, Join, Me, Msg, Nick, Part, Quit, Rooms, Say, TagMsg, Topic, Who,
)
from chatservice.core.errors import ChatError, InvalidNick, NotAllowed, NotInRoom
from chatservice.core.events import (
    CurrentRoom,
    HelpText,
    Notice,
    Refusal,
    Registered,
    RoomJoined,
    RoomList,
    RoomParted,
    TopicIs,
    Welcome,
    WhoList,
)
from chatservice.core.flood import FloodGuard
from chatservice.core.limits import Limits
from chatservice.core.nicks import validate
from chatservice.core.render import scrub

GREETING = "welcome to chatroom, what is your nickname?"
ASK_AGAIN = "what is your nickname?"
#: Seconds the nick registry has to answer; then the user is told and the session ends.
REGISTRY_TIMEOUT = 10.0
#: A sender over the flood rate is told so at most once per this many seconds.
SLOWED_NOTICE_INTERVAL = 10.0
#: Lines refused because the held queue is full are reported at most once per second.
REFUSED_NOTICE_INTERVAL = 1.0
#: The welcome and a join's reply name at most this many members; /who names everyone.
NAMES_SHOWN = 20

_AWAITING, _JOINED, _GONE = "awaiting nick", "joined", "gone"


def _first_names(room) -> tuple:
    """The nicks of the first L{NAMES_SHOWN} members of C{room}, without copying them all."""
    return tuple(member.nick for member in islice(room.members, NAMES_SHOWN))


def _scrubbed(command):
    """C{command} with its free text (C{text}, C{reason}) scrubbed of control sequences,
    as a line's text is before parsing: front-ends that send command values get the same."""
    changes = {}
    for name in ("text", "reason"):
        value = getattr(command, name, None)
        if type(value) is str and not value.isprintable():
            changes[name] = scrub(value)
    return replace(command, **changes) if changes else command


class Session:
    """
    The chat rules for one participant.

    Lines are applied in the order they arrive.  A line that may not go yet
    (over the flood rate, or the registry is still answering an earlier one)
    is held, and the participant is asked to pause its input until the held
    lines have gone: TCP stops reading its socket, so a paste is relayed at the
    sustained rate with nothing lost and nothing kept by the server; UDP cannot
    pause, so at most C{limits.flood.queue} lines are held and more are refused.

    @param participant: the L{IParticipant} this session speaks for; the
        session sets its C{nick} and C{room} (where plain lines go).
    @param hub: the L{chatservice.core.hub.Hub}.
    @param registry: an L{INickRegistry}; its answers may be Deferreds.
    @param clock: an C{IReactorTime} for flood accounting and the timers.
    @param limits: the service's L{Limits} (flood policy, login timeout).
    @param lands_in_default_room: whether choosing a nick puts the user in the
        default room (the line protocols) or in no room, told L{Registered} (IRC).
    """

    log = Logger()

    def __init__(self, participant, hub, registry, clock, limits: Limits = Limits(),
                 lands_in_default_room: bool = True):
        self._participant = participant
        self._lands_in_default_room = lands_in_default_room
        self._hub = hub
        self._current = None  # the Room plain lines go to
        self._registry = registry
        self._clock = clock
        self._limits = limits
        self._state = _AWAITING
        self._busy = False  # a registry call is under way
        # A list, not a deque: an empty deque costs 760 bytes per user, and this holds
        # at most --flood-queue lines, so popping from its front is cheap.
        self._held: list = []  # lines (str) and command values, in order
        self._release_call = None  # when the first held line may go
        self._draining = False
        self._input_paused = False
        self._slowed_told_at = float("-inf")
        self._refused_told_at = float("-inf")
        self._flood = FloodGuard(limits.flood, clock.seconds())
        self._login_timer = None
        self._greets = True

    @property
    def joined(self) -> bool:
        """Whether the user has a nick and has not gone (it may be in no room)."""
        return self._state == _JOINED

    @property
    def gone(self) -> bool:
        """Whether the session has ended."""
        return self._state == _GONE

    @property
    def held(self) -> int:
        """Lines received but not applied yet (flood control or a pending registry answer)."""
        return len(self._held)

    def start(self, nick: str | None = None, greet: bool = True) -> None:
        """
        Begin: greet and start the login timer, or take C{nick} at once.

        @param nick: a nick the transport already has (UDP's JOIN carries one).
        @param greet: whether to ask for a nick (IRC clients speak first).
        """
        self._hub.enter(self._participant, self)
        if self._limits.login_timeout > 0:
            self._login_timer = self._clock.callLater(
                self._limits.login_timeout, self._login_expired
            )
        self._greets = greet
        if nick is None:
            if greet:
                self._tell(Notice(GREETING))
        else:
            self.handle(nick)

    # -- input: in order, at the flood rate ---------------------------------

    def handle(self, line) -> None:
        """
        Take one line of user text, or one command value (a front-end that
        parses its own protocol, IRC); it is applied now or, in order, once it may go.
        """
        if self._state == _GONE:
            return
        if self._flood.abusive(self._clock.seconds()):
            self.log.warn("{nick} ({peer}) kicked for flooding", nick=self._participant.nick,
                          peer=self._participant.peer)
            self.end("flooding", goodbye="disconnected for flooding")
            return
        if self._held or self._busy or self._release_call is not None:
            self._hold(line)
        else:
            self._offer(line)

    def _hold(self, line) -> None:
        """Keep C{line} for later, within the bound; refuse it beyond."""
        bound = self._limits.flood.queue
        if len(self._held) >= bound:
            now = self._clock.seconds()
            if now - self._refused_told_at >= REFUSED_NOTICE_INTERVAL:
                self._refused_told_at = now
                self.log.warn("{nick} ({peer}) has {bound} lines held; refusing more",
                              nick=self._participant.nick, peer=self._participant.peer,
                              bound=bound)
                self._tell(Refusal(
                    ChatError.kind,
                    f"slow down: {bound} of your lines are already waiting; line dropped",
                ))
            return
        self._held.append(line)
        self._pause_input()

    def _offer(self, line) -> None:
        """Apply C{line} if the flood rate allows it now; otherwise hold it at the front."""
        wait = self._flood.take(self._clock.seconds())
        if wait > 0:
            self._held.insert(0, line)
            self._pause_input()
            self._slowed()
            self._release_call = self._clock.callLater(wait, self._release_held)
            return
        self._apply_line(line)

    def _release_held(self) -> None:
        """The bucket has a token again: let held lines go."""
        self._release_call = None
        self._drain()

    def _drain(self) -> None:
        """Apply held lines while they may go; read input again once none is held."""
        if self._draining:
            return  # the loop below is already running further up the stack
        self._draining = True
        try:
            while (self._held and not self._busy and self._release_call is None
                   and self._state != _GONE):
                self._offer(self._held.pop(0))
        finally:
            self._draining = False
        if (not self._held and not self._busy and self._release_call is None
                and self._state != _GONE):
            self._resume_input()

    def _slowed(self) -> None:
        """Tell the sender, once in a while, that its lines are being held back."""
        now = self._clock.seconds()
        if now - self._slowed_told_at < SLOWED_NOTICE_INTERVAL:
            return
        self._slowed_told_at = now
        self.log.info("{nick} ({peer}) is over the flood rate; holding lines back",
                      nick=self._participant.nick, peer=self._participant.peer)
        rate = self._limits.flood.rate
        self._tell(Notice(
            f"slow down: you may send {rate:g} lines per second; "
            "your next lines are held back and sent at that rate"
        ))

    def _pause_input(self) -> None:
        if not self._input_paused:
            self._input_paused = True
            self._participant.pause_input()

    def _resume_input(self) -> None:
        if self._input_paused:
            self._input_paused = False
            self._participant.resume_input()

    def _apply_line(self, line) -> None:
        """Parse and apply one line (or command); refusals go back to the user as values."""
        command = None
        try:
            command = commands.parse(scrub(line)) if type(line) is str else _scrubbed(line)
            if self._state == _AWAITING:
                self._before_joining(command)
            elif command is not None:
                self._apply(command)
        except ChatError as refusal:
            if getattr(command, "quiet", False):
                return
            self._refuse(str(refusal), refusal.kind, refusal.subject,
                         "" if command is None else type(command).__name__)
        except Exception:
            self.log.failure(
                "Handling a line from {nick} ({peer}) failed",
                nick=self._participant.nick, peer=self._participant.peer,
            )
            self.end("internal error", goodbye="internal error, disconnecting")

    def _before_joining(self, command) -> None:
        if command is None:
            raise InvalidNick("type a nickname: it cannot be empty")
        if isinstance(command, Say):
            self._choose_nick(command.text.strip())
        elif isinstance(command, Nick):
            self._choose_nick(command.nick)
        elif isinstance(command, Quit):
            self.end(command.reason or "quit", goodbye="goodbye")
        elif isinstance(command, Help):
            self._help()
        else:
            raise NotAllowed("choose a nickname first")

    def _apply(self, command) -> None:
        hub, me = self._hub, self._participant
        kind = type(command)
        if kind is Say:
            hub.say(me, self._named_or_current(command.room), command.text, command.quiet,
                    command.tags)
        elif kind is Me:
            hub.emote(me, self._named_or_current(command.room), command.text, command.tags)
        elif kind is TagMsg:
            if command.target.startswith("#"):
                hub.tag_room(me, self._named_or_current(command.target), command.tags)
            else:
                hub.tag_user(me, command.target, command.tags)
        elif kind is Call:
            for then in command.fn() or ():
                self._apply(_scrubbed(then))
        elif kind is Msg:
            hub.private(me, command.nick, command.text, command.quiet, command.action,
                        command.tags)
        elif kind is Join:
            self._join(command.room, command.since)
        elif kind is Part:
            room = self._named_or_current(command.room)
            hub.part(me, room, command.reason)
            if room is self._current:
                remaining = hub.rooms_of(me)
                self._set_current(remaining[-1] if remaining else None)
            self._tell(RoomParted(room.name, self._participant.room, command.reason))
        elif kind is Rooms:
            self._tell(RoomList(hub.rooms(command.containing), command.containing))
        elif kind is Who:
            room = self._named_or_current(command.room, members_only=False)
            self._tell(WhoList(room.name, hub.who(room)))
        elif kind is Topic:
            room = self._named_or_current(command.room, members_only=command.text is not None)
            if command.text is None:
                self._tell(TopicIs(room.name, room.topic, room.topic_by, room.topic_time))
            else:
                hub.set_topic(me, room, command.text)
        elif kind is History:
            room = self._named_or_current(command.room)
            hub.history(me, room, command.count or commands.HISTORY_DEFAULT, command.before,
                        command.after)
        elif kind is Nick:
            self._rename(command.nick)
        elif kind is Help:
            self._help()
        elif kind is Quit:
            self.end(command.reason or "quit", goodbye="goodbye")

    # -- rooms -----------------------------------------------------------

    def _current_room(self):
        if self._current is None:
            raise NotInRoom("you are in no room: /join #room first")
        return self._current

    def _named_or_current(self, name, members_only: bool = True):
        """The room C{name} names, or the current one; one the user is in, if C{members_only}."""
        if name is None:
            return self._current_room()
        room = self._hub.room(name)
        if members_only and self._participant not in room.members:
            raise NotInRoom(f"you are not in {room.name}", subject=room.name)
        return room

    def _set_current(self, room) -> None:
        self._current = room
        self._participant.room = None if room is None else room.name

    def _join(self, name: str, since: int | None = None) -> None:
        me = self._participant
        before = self._hub.rooms_of(me)
        room = self._hub.join(me, name, since)
        self._set_current(room)
        if room in before:
            self._tell(CurrentRoom(room.name))
            return
        self._tell(RoomJoined(room.name, room.topic, len(room), _first_names(room)))

    # -- the registry, which may answer later ---------------------------

    def _ask_registry(self, on_answer, undo, call, *args) -> None:
        """
        Call the registry; hold further lines until it has answered.

        Every outcome is handled: the answer, a refusal (a C{! } line), a bug
        (logged; this session ends), or no answer within L{REGISTRY_TIMEOUT}
        (the user is told and the session ends; C{undo} then gives back what
        the registry may still grant after we stopped waiting).
        """
        self._busy = True
        d = defer.maybeDeferred(call, *args)
        if not d.called:
            self._pause_input()
            d.addTimeout(REGISTRY_TIMEOUT, self._clock)
        d.addCallbacks(on_answer, self._registry_failed, errbackArgs=(undo,))
        d.addErrback(self._internal_error)
        d.addBoth(self._registry_answered)

    def _registry_failed(self, failure, undo) -> None:
        if failure.check(ChatError):
            if self._state != _GONE:
                self._refuse(failure.getErrorMessage(), failure.value.kind,
                             failure.value.subject, "Nick")
            return
        if failure.check(defer.TimeoutError):
            self.log.warn(
                "The nick registry did not answer {nick} ({peer}) within {timeout}s",
                nick=self._participant.nick, peer=self._participant.peer,
                timeout=REGISTRY_TIMEOUT,
            )
            undo()
            self.end("server error", goodbye="the server could not check nicknames in time; "
                     "please try again later")
            return
        failure.raiseException()

    def _internal_error(self, failure) -> None:
        """A bug showed up while asking the registry: log it, end this session only."""
        self.log.failure("Registry call for {nick} ({peer}) failed", failure,
                         nick=self._participant.nick, peer=self._participant.peer)
        self.end("internal error", goodbye="internal error, disconnecting")

    def _registry_answered(self, _) -> None:
        self._busy = False
        self._drain()

    def _release(self, nick: str) -> None:
        """Give C{nick} back; a failure or a registry that never answers is logged, not raised."""
        d = defer.maybeDeferred(self._registry.release, nick, self)
        if not d.called:
            d.addTimeout(REGISTRY_TIMEOUT, self._clock)
        d.addErrback(lambda f: self.log.failure("Releasing {nick} failed", f, nick=nick))

    def _choose_nick(self, nick: str) -> None:
        if self._hub.closing:
            raise NotAllowed("server shutting down")
        validate(nick)  # a nick that breaks the rules needs no registry round trip
        self._ask_registry(
            self._nick_reserved, lambda: self._release(nick), self._registry.reserve, nick, self
        )

    def _nick_reserved(self, nick: str) -> None:
        if self._state == _GONE:
            self._release(nick)
            return
        self._participant.nick = nick
        self._state = _JOINED
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        self._greets = True
        hub = self._hub
        hub.arrive(self._participant)
        if not self._lands_in_default_room:
            self._tell(Registered(nick))
            return
        room = hub.join(self._participant, hub.default_room.name)
        self._set_current(room)
        self._tell(Welcome(nick, room.name, len(room), _first_names(room)))
        self._tell(Notice("type /help for commands"))

    def _rename(self, new: str) -> None:
        old = self._participant.nick
        if new == old:
            raise NotAllowed(f"you are already {old}")
        self._ask_registry(
            lambda renamed: self._renamed(old, renamed),
            lambda: self._release(new),
            self._registry.rename,
            old,
            new,
            self,
        )

    def _renamed(self, old: str, new: str) -> None:
        if self._state != _JOINED:
            self._release(new)
            return
        self._participant.nick = new
        self._hub.rename(self._participant, old, new)

    # -- replies and endings --------------------------------------------

    def _tell(self, event) -> None:
        self._hub.tell(self._participant, event)

    def _refuse(self, text: str, kind: str = ChatError.kind, subject: str = "",
                command: str = "") -> None:
        self._tell(Refusal(kind, text, subject, command))
        if self._state == _AWAITING and self._greets:
            self._tell(Notice(ASK_AGAIN))

    def _help(self) -> None:
        self._tell(HelpText(commands.HELP_LINES))

    def _login_expired(self) -> None:
        self._login_timer = None
        self._greets = True
        timeout = self._limits.login_timeout
        self.log.info("A {via} user at {peer} chose no nick in time",
                      via=self._participant.via, peer=self._participant.peer)
        self.end(
            "login timeout", goodbye=f"no nickname chosen within {timeout:g} seconds"
        )

    def end(self, reason: str, goodbye: str | None = None) -> defer.Deferred:
        """
        End the session: leave every room, free the nick, say goodbye.

        The one place a session ends, whoever asks (the user, the flood
        guard, shutdown, a front-end whose connection went): the front-end
        is then only told to hang up.

        @param reason: what the others see in C{* NAME left (reason)}.
        @param goodbye: if given, the participant is closed with this notice;
            if None, the transport is already gone (or hangs up by itself).
        @return: a Deferred firing once the participant is gone; never fails.
        """
        if self._state == _GONE:
            return defer.succeed(None)
        was_joined = self._state == _JOINED
        self._state = _GONE
        self._held.clear()
        if self._release_call is not None and self._release_call.active():
            self._release_call.cancel()
        self._release_call = None
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        self._greets = True
        nick = self._participant.nick
        self._hub.depart(self._participant, reason)
        if was_joined:
            self._release(nick)
        if goodbye is None:
            return defer.succeed(None)
        d = defer.maybeDeferred(self._participant.close, goodbye)
        d.addErrback(lambda f: self.log.failure("Closing {nick} failed", f, nick=nick))
        return d

    def connection_lost(self) -> None:
        """The transport is gone without a C{/quit}."""
        self.end("connection lost")
