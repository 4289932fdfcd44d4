# -*- test-case-name: tests.test_render -*-
"""What happens in the room, as values.

The room emits these; each transport renders them its own way, and history,
a bridge or metrics consume the room-wide ones.  Per-user replies (notices,
refusals, private messages) are events too, so one path carries everything a
user sees, in order.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Joined:
    """C{nick} entered the room through transport C{via}."""

    nick: str
    via: str


@dataclass(frozen=True, slots=True)
class Said:
    """C{nick} said C{text} to the room."""

    nick: str
    text: str


@dataclass(frozen=True, slots=True)
class Emote:
    """C{nick} did C{text} (C{/me}), shown as C{* nick text}."""

    nick: str
    text: str


@dataclass(frozen=True, slots=True)
class Renamed:
    """C{old} is now known as C{new}."""

    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Left:
    """C{nick} left the room; C{reason} says why."""

    nick: str
    reason: str


@dataclass(frozen=True, slots=True)
class Private:
    """C{sender} told C{recipient} C{text}; only the recipient sees it."""

    sender: str
    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class PrivateSent:
    """The sender's own copy of a private message, so it knows where it went."""

    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A server notice to one user (welcome, /who, /help, goodbye)."""

    text: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refusal or error for one user, shown as a C{! } line."""

    text: str


ROOM_EVENTS = (Joined, Said, Emote, Renamed, Left)
"""The event types that concern the whole room, and so go to sinks."""
