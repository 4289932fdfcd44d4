# -*- test-case-name: tests.test_session -*-
"""Refusals a user can fix, each shown to that user (a C{! } line on the line protocols).

Each kind has a short C{kind} string that travels in the L{Refusal} event, so
the IRC front-end can answer 433 for C{nick-in-use} and the web client can
show the refusal beside the right field, without parsing the text.  Anything
that is not a L{ChatError} is a bug and is handled as one.
"""


class ChatError(Exception):
    """
    A request the server refuses; C{str(error)} is what the user reads.

    @ivar subject: the nick or room the refusal is about (empty if none), for
        protocols whose errors name it (IRC's C{401 me NICK :No such nick}).
    """

    kind = "refused"

    def __init__(self, text: str = "", subject: str = "") -> None:
        super().__init__(text)
        self.subject = subject


class InvalidNick(ChatError):
    """The nickname breaks the nickname rules."""

    kind = "invalid-nick"


class NickInUse(ChatError):
    """Somebody already holds a nickname that folds to the same key."""

    kind = "nick-in-use"


class NoSuchUser(ChatError):
    """A private message names nobody online."""

    kind = "no-such-user"


class InvalidRoom(ChatError):
    """The room name breaks the room-name rules."""

    kind = "invalid-room"


class NoSuchRoom(ChatError):
    """No room has this name."""

    kind = "no-such-room"


class NotInRoom(ChatError):
    """The user is not in the room the command names (or in no room at all)."""

    kind = "not-in-room"


class TooManyRooms(ChatError):
    """The user is in C{--max-rooms-per-user} rooms, or the service holds C{--max-rooms}."""

    kind = "too-many-rooms"


class TooLong(ChatError):
    """A value longer than its bound (a topic over C{--max-topic})."""

    kind = "too-long"


class UnknownCommand(ChatError):
    """A C{/word} that is not a command."""

    kind = "unknown-command"


class BadUsage(ChatError):
    """A known command with missing or wrong arguments."""

    kind = "bad-usage"


class NotAllowed(ChatError):
    """A command that is not allowed in the session's current state."""

    kind = "not-allowed"


class Unavailable(ChatError):
    """A service the request needs (the history store) cannot answer now."""

    kind = "unavailable"
