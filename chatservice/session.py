# -*- test-case-name: tests.test_session -*-
"""One user's state machine: awaiting a nick, joined, gone.

Transports hand it decoded lines; it applies the chat rules through the room
and the registry.  It never sees a socket, so every transport shares it.
"""

from twisted.internet import defer
from twisted.logger import Logger

from chatservice import commands
from chatservice.commands import Help, Me, Msg, Nick, Quit, Say, Who
from chatservice.errors import ChatError, NotAllowed
from chatservice.events import Emote, Notice, Refusal, Said
from chatservice.flood import FloodGuard, Verdict
from chatservice.limits import Limits
from chatservice.render import scrub

GREETING = "welcome to chatroom, what is your nickname?"
ASK_AGAIN = "what is your nickname?"
#: Lines that arrive while the registry is answering are kept, up to this many.
MAX_QUEUED_LINES = 64

_AWAITING, _JOINED, _GONE = "awaiting nick", "joined", "gone"


class Session:
    """
    The chat rules for one participant.

    @param participant: the L{IParticipant} this session speaks for; the
        session sets its C{nick}.
    @param registry: an L{INickRegistry}; its answers may be Deferreds.
    @param clock: an C{IReactorTime} for flood accounting and the login timer.
    """

    log = Logger()

    def __init__(self, participant, room, registry, clock, limits: Limits = Limits()):
        self._participant = participant
        self._room = room
        self._registry = registry
        self._clock = clock
        self._limits = limits
        self._state = _AWAITING
        self._busy = False
        self._queued: list[str] = []
        self._flood = FloodGuard(limits.flood, clock.seconds())
        self._login_timer = None

    @property
    def joined(self) -> bool:
        """Whether the user is in the room now."""
        return self._state == _JOINED

    @property
    def gone(self) -> bool:
        """Whether the session has ended."""
        return self._state == _GONE

    def start(self, nick: str | None = None) -> None:
        """
        Begin: greet and start the login timer, or take C{nick} at once.

        @param nick: a nick the transport already has (UDP's JOIN carries one).
        """
        self._room.enter(self._participant)
        if self._limits.login_timeout > 0:
            self._login_timer = self._clock.callLater(
                self._limits.login_timeout, self._login_expired
            )
        if nick is None:
            self._tell(Notice(GREETING))
        else:
            self.handle(nick)

    def handle(self, line: str) -> None:
        """Apply one line of user text; refusals go back to the user as C{! } lines."""
        if self._state == _GONE:
            return
        if self._busy:
            if len(self._queued) < MAX_QUEUED_LINES:
                self._queued.append(line)
            return
        try:
            self._handle(line)
        except ChatError as refusal:
            self._refuse(str(refusal))
        except Exception:
            self.log.failure(
                "Handling a line from {nick} failed", nick=self._participant.nick
            )
            self.end("internal error", goodbye="internal error, disconnecting")

    def _handle(self, line: str) -> None:
        verdict = self._flood.check(self._clock.seconds())
        if verdict is Verdict.KICK:
            self.log.warn("{nick} kicked for flooding", nick=self._participant.nick)
            self.end("flooding", goodbye="disconnected for flooding")
            return
        if verdict is Verdict.WARN:
            self.log.warn("{nick} is flooding", nick=self._participant.nick)
            rate = self._limits.flood.rate
            self._refuse(f"slow down: at most {rate:g} lines per second; lines dropped")
            return
        if verdict is Verdict.DROP:
            return
        command = commands.parse(scrub(line))
        if command is None:
            return
        if self._state == _AWAITING:
            self._before_joining(command)
        else:
            self._apply(command)

    def _before_joining(self, command) -> None:
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
        nick = self._participant.nick
        if isinstance(command, Say):
            self._room.publish(Said(nick, command.text), exclude=self._participant)
        elif isinstance(command, Me):
            self._room.publish(Emote(nick, command.text), exclude=self._participant)
        elif isinstance(command, Msg):
            self._room.private(self._participant, command.nick, command.text)
        elif isinstance(command, Nick):
            self._rename(command.nick)
        elif isinstance(command, Who):
            listing = ", ".join(f"{nick} ({via})" for nick, via in self._room.who())
            self._tell(Notice(f"{len(self._room)} online: {listing}"))
        elif isinstance(command, Help):
            self._help()
        elif isinstance(command, Quit):
            self.end(command.reason or "quit", goodbye="goodbye")

    # -- the registry, which may answer later ---------------------------

    def _ask_registry(self, on_answer, call, *args) -> None:
        """Call the registry; hold further lines until it has answered."""
        self._busy = True
        d = defer.maybeDeferred(call, *args)
        d.addCallbacks(on_answer, self._registry_refused)
        d.addErrback(self._internal_error)
        d.addBoth(self._registry_answered)

    def _internal_error(self, failure) -> None:
        """A bug showed up while asking the registry: log it, end this session only."""
        self.log.failure("Registry call for {nick} failed", failure, nick=self._participant.nick)
        self.end("internal error", goodbye="internal error, disconnecting")

    def _registry_refused(self, failure):
        failure.trap(ChatError)
        if self._state != _GONE:
            self._refuse(failure.getErrorMessage())

    def _registry_answered(self, _) -> None:
        self._busy = False
        queued, self._queued = self._queued, []
        for line in queued:
            self.handle(line)

    def _choose_nick(self, nick: str) -> None:
        if self._room.closing:
            raise NotAllowed("server shutting down")
        self._ask_registry(self._nick_reserved, self._registry.reserve, nick, self)

    def _nick_reserved(self, nick: str) -> None:
        if self._state == _GONE:
            self._registry.release(nick, self)
            return
        self._participant.nick = nick
        self._state = _JOINED
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        self._room.join(self._participant)
        self._tell(Notice(self._room.welcome_text(self._participant)))
        self._tell(Notice("type /help for commands"))

    def _rename(self, new: str) -> None:
        old = self._participant.nick
        if new == old:
            raise NotAllowed(f"you are already {old}")
        self._ask_registry(
            lambda renamed: self._renamed(old, renamed),
            self._registry.rename,
            old,
            new,
            self,
        )

    def _renamed(self, old: str, new: str) -> None:
        if self._state != _JOINED:
            self._registry.release(new, self)
            return
        self._participant.nick = new
        self._room.rename(self._participant, old, new)

    # -- replies and endings --------------------------------------------

    def _tell(self, event) -> None:
        self._room.tell(self._participant, event)

    def _refuse(self, text: str) -> None:
        self._tell(Refusal(text))
        if self._state == _AWAITING:
            self._tell(Notice(ASK_AGAIN))

    def _help(self) -> None:
        for line in commands.HELP_LINES:
            self._tell(Notice(line))

    def _login_expired(self) -> None:
        self._login_timer = None
        timeout = self._limits.login_timeout
        self.log.info("A {via} user chose no nick in time", via=self._participant.via)
        self.end(
            "login timeout", goodbye=f"no nickname chosen within {timeout:g} seconds"
        )

    def end(self, reason: str, goodbye: str | None = None) -> None:
        """
        End the session: leave the room, free the nick, optionally say goodbye.

        @param reason: what the others see in C{* NAME left (reason)}.
        @param goodbye: if given, the participant is closed with this notice;
            if None, the transport is already gone.
        """
        if self._state == _GONE:
            return
        was_joined = self._state == _JOINED
        self._state = _GONE
        self._queued = []
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        self._login_timer = None
        nick = self._participant.nick
        self._room.leave(self._participant, reason)
        self._room.exit(self._participant)
        if was_joined:
            d = defer.maybeDeferred(self._registry.release, nick, self)
            d.addErrback(lambda f: self.log.failure("Releasing {nick} failed", f, nick=nick))
        if goodbye is not None:
            d = defer.maybeDeferred(self._participant.close, goodbye)
            d.addErrback(lambda f: self.log.failure("Closing {nick} failed", f, nick=nick))

    def connection_lost(self) -> None:
        """The transport is gone without a C{/quit}."""
        self.end("connection lost")
