# -*- test-case-name: tests.test_commands -*-
"""One line of user text to one command value; pure, no I/O.

Every transport that speaks the line protocol (TCP, UDP, the client's input)
shares this parser, so C{/msg} means the same thing everywhere.
"""

from dataclasses import dataclass

from chatservice.core.errors import BadUsage, UnknownCommand
from chatservice.core.names import fold


@dataclass(frozen=True, slots=True)
class Say:
    """
    A plain line for the current room, or for C{room} (IRC names it).

    @ivar quiet: refused without telling the sender (IRC's NOTICE is never answered).
    """

    text: str
    room: str | None = None
    quiet: bool = False
    tags: tuple = ()  # client-only tags, (name, value) pairs (IRC's message-tags)


@dataclass(frozen=True, slots=True)
class Me:
    """C{/me text}: an action, in the current room or C{room}."""

    text: str
    room: str | None = None
    quiet: bool = False
    tags: tuple = ()


@dataclass(frozen=True, slots=True)
class Msg:
    """C{/msg NICK text}: a private message."""

    nick: str
    text: str
    quiet: bool = False
    action: bool = False  # a private C{/me} (IRC's CTCP ACTION to a nick)
    tags: tuple = ()


@dataclass(frozen=True, slots=True)
class TagMsg:
    """Client-only C{tags} without text to a room or a nick (IRC's TAGMSG)."""

    target: str
    tags: tuple


@dataclass(frozen=True, slots=True)
class Nick:
    """C{/nick NAME}: choose or change one's nickname."""

    nick: str


@dataclass(frozen=True, slots=True)
class Quit:
    """C{/quit [reason]}."""

    reason: str


@dataclass(frozen=True, slots=True)
class Who:
    """C{/who [#room]}: list who is in a room (None: the current one)."""

    room: str | None = None


@dataclass(frozen=True, slots=True)
class Help:
    """C{/help}: list the commands."""


@dataclass(frozen=True, slots=True)
class Join:
    """
    C{/join #room}: join a room (creating it) and make it current.

    @ivar since: the id of the last line a returning client saw there: it is
        shown the lines after it (up to L{chatservice.core.hub.RESUME_MAX}) instead of the last few.
        Never made from text.
    """

    room: str
    since: int | None = None


@dataclass(frozen=True, slots=True)
class Part:
    """C{/part [#room] [reason]}: leave a room (None: the current one)."""

    room: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Rooms:
    """C{/rooms [text]}: list every room (whose name contains C{text}) with its
    member count and topic."""

    containing: str = ""


@dataclass(frozen=True, slots=True)
class Topic:
    """C{/topic [#room] [text]}: show the topic (C{text} None) or set it."""

    room: str | None
    text: str | None


@dataclass(frozen=True, slots=True)
class History:
    """
    C{/history [#room] [N]}: show a room's last N lines.

    @ivar before: only lines with a smaller id (a client scrolling up).
    @ivar after: the first N lines with a larger id instead (a client catching up).
    Neither is made from text.
    """

    room: str | None
    count: int | None
    before: int | None = None
    after: int | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """
    A front-end's own request, applied in its turn among the user's lines
    (flood control and order included): C{fn()} answers it (an IRC query such as
    NAMES or WHOIS, through L{chatservice.core.events.Reply}) and may raise a
    L{ChatError}, or return commands to apply in its place (IRC's C{JOIN 0}).
    Never made from text.
    """

    fn: object


Command = (Say | Me | Msg | Nick | Quit | Who | Help | Join | Part | Rooms | Topic | History
           | Call | TagMsg)

#: The most lines /history shows at once, and how many it shows when not told.
HISTORY_MAX = 200
HISTORY_DEFAULT = 20

_HELP = (
    ("/join #room", "join a room (created if new); your lines go there"),
    ("/part [#room] [reason]", "leave a room (the current one if none named)"),
    ("/rooms [text]", "list rooms (with text in the name), counts, topics"),
    ("/who [#room]", "list who is in a room and how they are connected"),
    ("/topic [#room] [text]", "show or set a room's topic"),
    ("/history [#room] [N]", f"show a room's last N lines (at most {HISTORY_MAX})"),
    ("/msg NICK text", "send text to NICK only, wherever they are"),
    ("/me text", "show an action: * you text"),
    ("/nick NAME", "change your nickname"),
    ("/quit [reason]", "leave"),
    ("/help", "this list"),
    ("//text", "send a line that starts with /"),
)
_USAGE_WIDTH = max(len(usage) for usage, _ in _HELP)

#: What C{/help} shows: one line per command, the descriptions in one column.
HELP_LINES = ("commands:",) + tuple(
    f"  {usage:<{_USAGE_WIDTH}}  {description}" for usage, description in _HELP
)


def _room_first(rest: str) -> tuple[str | None, str]:
    """Split an optional leading C{#room} from the rest of the arguments."""
    if rest.startswith("#"):
        room, _, tail = rest.partition(" ")
        return room, tail.strip()
    return None, rest


def _needs_argument(rest: str, usage: str) -> str:
    if not rest:
        raise BadUsage(f"usage: {usage}")
    return rest


def parse(line: str) -> Command | None:
    """
    Turn one line into a command value.

    @return: the command, or None for a blank line (ignored).
    @raise UnknownCommand: C{/word} is not a command.
    @raise BadUsage: a command lacks its arguments.
    """
    if not line.strip():
        return None
    if not line.startswith("/"):
        return Say(line)
    if line.startswith("//"):
        return Say(line[1:])
    typed, _, rest = line[1:].partition(" ")
    verb = fold(typed)
    rest = rest.strip()
    if verb == "me":
        return Me(_needs_argument(rest, "/me text"))
    if verb == "msg":
        nick, _, text = rest.partition(" ")
        text = text.strip()
        if not nick or not text:
            raise BadUsage("usage: /msg NICK text")
        return Msg(nick, text)
    if verb == "nick":
        return Nick(_needs_argument(rest, "/nick NAME"))
    if verb == "quit":
        return Quit(rest)
    if verb == "who":
        room, tail = _room_first(rest)
        if tail:
            raise BadUsage("usage: /who [#room]")
        return Who(room)
    if verb == "help":
        return Help()
    if verb == "join":
        room, _, tail = rest.partition(" ")
        if not room or tail.strip():
            raise BadUsage("usage: /join #room")
        return Join(room)
    if verb == "part":
        room, reason = _room_first(rest)
        return Part(room, reason)
    if verb == "rooms":
        if " " in rest:
            raise BadUsage("usage: /rooms [text]")
        return Rooms(rest)
    if verb == "topic":
        room, text = _room_first(rest)
        return Topic(room, text or None)
    if verb == "history":
        room, tail = _room_first(rest)
        if not tail:
            return History(room, None)
        if not (tail.isascii() and tail.isdigit()) or not 1 <= int(tail) <= HISTORY_MAX:
            raise BadUsage(f"usage: /history [#room] [N], N from 1 to {HISTORY_MAX}")
        return History(room, int(tail))
    raise UnknownCommand(f"unknown command: /{typed} (try /help)")
