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
    """A plain line for the room."""

    text: str


@dataclass(frozen=True, slots=True)
class Me:
    """C{/me text}: an action."""

    text: str


@dataclass(frozen=True, slots=True)
class Msg:
    """C{/msg NICK text}: a private message."""

    nick: str
    text: str


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
    """C{/who}: list everyone online."""


@dataclass(frozen=True, slots=True)
class Help:
    """C{/help}: list the commands."""


Command = Say | Me | Msg | Nick | Quit | Who | Help

HELP_LINES = (
    "commands:",
    "  /who               list everyone online and how they are connected",
    "  /msg NICK text     send text to NICK only",
    "  /me text           show an action: * you text",
    "  /nick NAME         change your nickname",
    "  /quit [reason]     leave",
    "  /help              this list",
    "  //text             send a line that starts with /",
)


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
        if rest:
            raise BadUsage("usage: /who")
        return Who()
    if verb == "help":
        return Help()
    raise UnknownCommand(f"unknown command: /{typed} (try /help)")
