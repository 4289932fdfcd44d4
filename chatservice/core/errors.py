# -*- test-case-name: tests.test_session -*-
"""Refusals a user can fix, each shown to that user as a C{! } line.

Anything that is not a L{ChatError} is a bug and is handled as one.
"""


class ChatError(Exception):
    """A request the server refuses; C{str(error)} is what the user reads."""


class InvalidNick(ChatError):
    """The nickname breaks the nickname rules."""


class NickInUse(ChatError):
    """Somebody already holds a nickname that folds to the same key."""


class NoSuchUser(ChatError):
    """A private message names nobody in the room."""


class UnknownCommand(ChatError):
    """A C{/word} that is not a command."""


class BadUsage(ChatError):
    """A known command with missing or wrong arguments."""


class NotAllowed(ChatError):
    """A command that is not allowed in the session's current state."""
