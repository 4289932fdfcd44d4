# -*- test-case-name: tests.test_nicks -*-
"""Nickname rules and the one registry every transport shares.

The rules are IRC's, so the same nick works when the IRC front-end arrives:
1 to 32 characters from ASCII letters, digits and C{_-[]{}\\|^}, not starting
with a digit or C{-}.  Uniqueness is ASCII case-insensitive (CASEMAPPING=ascii).
"""

import re

from zope.interface import implementer

from chatservice.core.errors import InvalidNick, NickInUse
from chatservice.core.interfaces import INickRegistry
from chatservice.core.names import fold

NICK_MAX_LENGTH = 32
_SPECIALS = r"_\-\[\]{}\\|^"
_ALLOWED = re.compile(rf"[A-Za-z0-9{_SPECIALS}]+\Z")


def casefold(nick: str) -> str:
    """The uniqueness key of a nick: L{chatservice.core.names.fold}, ASCII only."""
    return fold(nick)


def validate(nick: str) -> str:
    """
    Check C{nick} against the rules.

    @return: C{nick} unchanged.
    @raise InvalidNick: with a reason a person can act on.
    """
    if not nick:
        raise InvalidNick("invalid nickname: it is empty", subject=nick)
    shown = nick if nick.isprintable() and len(nick) <= 64 else repr(nick[:64])
    if len(nick) > NICK_MAX_LENGTH:
        raise InvalidNick(
            f"invalid nickname {shown}: at most {NICK_MAX_LENGTH} characters", subject=nick
        )
    if not _ALLOWED.match(nick):
        raise InvalidNick(
            f"invalid nickname {shown}: use only ASCII letters, digits and _-[]{{}}\\|^",
            subject=nick,
        )
    if nick[0].isdigit() or nick[0] == "-":
        raise InvalidNick(
            f"invalid nickname {shown}: it must not start with a digit or '-'", subject=nick
        )
    return nick


@implementer(INickRegistry)
class NickRegistry:
    """
    Who holds which nick, for the whole service.

    Every operation completes in one call, so reserve and rename are atomic
    under the reactor: nobody can slip in between a check and a claim.
    """

    def __init__(self) -> None:
        self._holders: dict[str, tuple[str, object]] = {}

    def reserve(self, nick: str, owner: object) -> str:
        """
        Claim C{nick} for C{owner}.

        @return: the display nick.
        @raise InvalidNick: the nick breaks the rules.
        @raise NickInUse: somebody holds a colliding nick.
        """
        validate(nick)
        key = casefold(nick)
        if key in self._holders:
            raise NickInUse(f"nickname {nick} is taken, try another", subject=nick)
        self._holders[key] = (nick, owner)
        return nick

    def rename(self, old: str, new: str, owner: object) -> str:
        """
        Move C{owner} from C{old} to C{new} in one step.

        A change of case only (C{alice} to C{Alice}) is allowed.

        @return: the new display nick.
        @raise InvalidNick: C{new} breaks the rules.
        @raise NickInUse: somebody else holds a nick colliding with C{new}.
        @raise KeyError: C{owner} does not hold C{old} (a bug in the caller).
        """
        validate(new)
        old_key, new_key = casefold(old), casefold(new)
        held = self._holders.get(old_key)
        if held is None or held[1] is not owner:
            raise KeyError(old)
        if new_key != old_key and new_key in self._holders:
            raise NickInUse(f"nickname {new} is taken, try another", subject=new)
        del self._holders[old_key]
        self._holders[new_key] = (new, owner)
        return new

    def release(self, nick: str, owner: object) -> None:
        """Free C{nick} if C{owner} holds it; otherwise do nothing."""
        key = casefold(nick)
        held = self._holders.get(key)
        if held is not None and held[1] is owner:
            del self._holders[key]

    def holder(self, nick: str) -> object | None:
        """The owner of C{nick} (any case), or None."""
        held = self._holders.get(casefold(nick))
        return None if held is None else held[1]

    def __len__(self) -> int:
        return len(self._holders)

    def __iter__(self):
        """Display nicks currently held."""
        return (display for display, _ in self._holders.values())
