# -*- test-case-name: tests.test_render -*-
"""What happens, and what the service answers, as values.

The hub emits these; each front-end renders them its own way (text lines,
IRC numerics, JSON), and history, a bridge or metrics consume the room
events.  Everything a user sees travels on one path, in order: room events,
private messages, and the replies to that user alone (welcome, listings,
refusals), which are values too so that no front-end has to parse text.

Room events and private messages carry a message id (unique and increasing
across the service, see L{chatservice.core.ids}) and a server timestamp in
seconds since the epoch.
"""

from dataclasses import dataclass, field

# -- room events: shown to a room's members, stored in its history ------------


@dataclass(frozen=True, slots=True)
class Said:
    """C{nick} said C{text} in C{room}; as a notice (IRC's NOTICE, which no program
    should answer) when C{notice}."""

    id: int
    time: float
    room: str
    nick: str
    text: str
    notice: bool = False
    #: Client-only tags (IRCv3 C{+name}, value) the sender attached; IRC clients that
    #: negotiated message-tags see them, nobody else does, and history does not keep them.
    tags: tuple = ()


@dataclass(frozen=True, slots=True)
class Emote:
    """C{nick} did C{text} in C{room} (C{/me}), shown as C{* nick text}."""

    id: int
    time: float
    room: str
    nick: str
    text: str
    tags: tuple = ()


@dataclass(frozen=True, slots=True)
class Joined:
    """C{nick} entered C{room} through transport C{via}."""

    id: int
    time: float
    room: str
    nick: str
    via: str


@dataclass(frozen=True, slots=True)
class Parted:
    """C{nick} left C{room} (C{/part}); C{reason} may be empty."""

    id: int
    time: float
    room: str
    nick: str
    reason: str


@dataclass(frozen=True, slots=True)
class TopicChanged:
    """C{nick} set the topic of C{room} to C{text} (empty: cleared)."""

    id: int
    time: float
    room: str
    nick: str
    text: str


# -- user events: concern every room the user is in, shown once per user ------


@dataclass(frozen=True, slots=True)
class Renamed:
    """C{old} is now known as C{new}; C{rooms} are the rooms they were in."""

    id: int
    time: float
    rooms: tuple
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Left:
    """C{nick} left the service (quit, lost, dropped); C{rooms} are the rooms they were in."""

    id: int
    time: float
    rooms: tuple
    nick: str
    reason: str


# -- private messages: user to user, never stored -----------------------------


@dataclass(frozen=True, slots=True)
class Private:
    """C{sender} told C{recipient} C{text}; only the recipient sees it."""

    id: int
    time: float
    sender: str
    recipient: str
    text: str
    notice: bool = False
    action: bool = False  # C{text} is what C{sender} does (a private C{/me})
    tags: tuple = ()


@dataclass(frozen=True, slots=True)
class PrivateSent:
    """The sender's own copy of a private message (same id), so it knows where it went."""

    id: int
    time: float
    recipient: str
    text: str
    notice: bool = False
    action: bool = False
    tags: tuple = ()


@dataclass(frozen=True, slots=True)
class TagMessage:
    """
    Tags without a message (IRCv3 TAGMSG: typing notices, reactions) from C{nick} to
    C{target}, a room or a nick.  Only IRC clients that negotiated message-tags see it;
    line users see nothing, and it is never stored.
    """

    id: int
    time: float
    nick: str
    target: str
    tags: tuple


# -- replies to one user ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice:
    """A plain server notice to one user (the greeting, a goodbye, a hint)."""

    text: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """
    A request refused, or an error, for one user.

    @ivar kind: what went wrong, from L{chatservice.core.errors} (C{"nick-in-use"},
        C{"no-such-room"}...), so a front-end can map it to its own code.
    """

    kind: str
    text: str
    #: The nick or room the refusal is about ("" if none); not compared (metadata).
    subject: str = field(default="", compare=False)
    #: The command refused, by its class name in L{chatservice.core.commands} ("" if
    #: none); not compared.
    command: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Registered:
    """You have the nick C{nick} and are in no room yet (sessions that do not land
    in the default room: IRC, whose clients choose their channels)."""

    nick: str


@dataclass(frozen=True, slots=True)
class Reply:
    """
    Text a front-end made for its own user (an IRC numeric the core has no value
    for), told through the hub so it reaches the user in order with the rest.
    """

    text: str


@dataclass(frozen=True, slots=True)
class Welcome:
    """You are in, as C{nick}, in C{room}, with C{members} (the first few of C{count})."""

    nick: str
    room: str
    count: int
    members: tuple


@dataclass(frozen=True, slots=True)
class RoomJoined:
    """You joined C{room}: its topic and its members (the first few of C{count})."""

    room: str
    topic: str
    count: int
    members: tuple


@dataclass(frozen=True, slots=True)
class RoomParted:
    """You left C{room}; C{current} is the room your lines now go to (or None)."""

    room: str
    current: str | None
    #: Why, as the user gave it (IRC shows it in the PART line); not compared.
    reason: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class CurrentRoom:
    """Your plain lines now go to C{room} (C{/join} of a room you were already in)."""

    room: str


@dataclass(frozen=True, slots=True)
class WhoList:
    """Who is in C{room}: C{members} is a tuple of (nick, via), in joining order."""

    room: str
    members: tuple


@dataclass(frozen=True, slots=True)
class RoomList:
    """The rooms whose name contains C{containing} (all when empty): C{rooms}
    is a tuple of (room, member count, topic), by name."""

    rooms: tuple
    containing: str = ""


@dataclass(frozen=True, slots=True)
class TopicIs:
    """The topic of C{room} (C{text} empty: none), set by C{nick} at C{time}."""

    room: str
    text: str
    nick: str
    time: float


@dataclass(frozen=True, slots=True)
class HelpText:
    """The command list: C{lines} of plain text."""

    lines: tuple


@dataclass(frozen=True, slots=True)
class HistoryStart:
    """A block of stored lines of C{room} follows (C{count} of them)."""

    room: str
    count: int


@dataclass(frozen=True, slots=True)
class Replayed:
    """One stored room event, shown with its original time inside a history block
    (C{now} is when it is shown, so a line from another day can show its date)."""

    event: object
    now: float


@dataclass(frozen=True, slots=True)
class HistoryEnd:
    """The history block of C{room} is over."""

    room: str


ROOM_EVENTS = (Said, Emote, Joined, Parted, TopicChanged)
"""Events of one room, shown to its members."""

USER_EVENTS = (Renamed, Left)
"""Events of one user, shown once to everyone who shares a room with them."""

STORED_EVENTS = ROOM_EVENTS + USER_EVENTS
"""What the history keeps, and what sinks receive (private messages never)."""

PUBLIC_LINES = (Said, Emote)
"""What the join replay counts: lines people wrote."""
