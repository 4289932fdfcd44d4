# -*- test-case-name: tests.test_render -*-
"""Events to the text lines TCP and UDP users see, and text hygiene.

Rendering is pure, and L{RenderCache} makes sure a line said to a hundred
people is formatted and encoded once.  L{scrub} keeps one user's bytes from ever reaching another
user's terminal as a control sequence.
"""

import re
import time
from itertools import accumulate

from chatservice.core.events import (
    ROOM_EVENTS,
    CurrentRoom,
    Emote,
    HelpText,
    HistoryEnd,
    HistoryStart,
    Joined,
    Left,
    Notice,
    Parted,
    Private,
    PrivateSent,
    Refusal,
    Renamed,
    Replayed,
    RoomJoined,
    RoomList,
    RoomParted,
    Said,
    TagMessage,
    TopicChanged,
    TopicIs,
    Welcome,
    WhoList,
)

LINE_END = b"\r\n"

ROOMS_SHOWN = 100
"""Rooms one C{/rooms} answer lists at most: a UDP user gets one frame per line,
and a thousand lines would fill its window of unacknowledged frames.  The rest
are counted, and C{/rooms TEXT} narrows the list."""

_CONTROL_SEQUENCES = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]?              # CSI ... final byte
    | \x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?   # OSC ... BEL or ST
    | \x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?        # DCS, SOS, PM, APC ... ST
    | \x1b[ -/]*[0-~]?                      # any other escape sequence
    | \x9b[0-?]*[ -/]*[@-~]?                # 8-bit CSI
    | [\x9d\x90\x98\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?  # 8-bit OSC, DCS...
    | [\x00-\x08\x0a-\x1f\x7f-\x9f]         # other C0 (not tab), DEL, C1
    | [\u202a-\u202e\u2066-\u2069]           # bidi embeddings, overrides, isolates
    """,
    re.VERBOSE,
)


def scrub(text: str) -> str:
    """
    Remove C0 controls (but tab), DEL, C1 controls, whole escape sequences and
    the bidirectional embedding, override and isolate characters (U+202A-U+202E,
    U+2066-U+2069), which would reorder the rest of another user's line.

    Printable text (the usual case) is returned as it is, without a regex pass.
    """
    if text.isprintable():
        return text
    return _CONTROL_SEQUENCES.sub("", text)


def _when(moment: float, now: float) -> str:
    """C{HH:MM} in the server's local time, with the date when it is not today's."""
    local = time.localtime(moment)
    if time.localtime(now)[:3] == local[:3]:
        return time.strftime("%H:%M", local)
    return time.strftime("%Y-%m-%d %H:%M", local)


def _more(count: int, shown: tuple) -> str:
    names = ", ".join(shown)
    if count > len(shown):
        names += f" and {count - len(shown)} more (/who lists all)"
    return names


def _body(event) -> str:
    """The text of C{event}, without any room mark."""
    kind = type(event)
    if kind is Said:
        return f"{event.nick}: {event.text}"
    if kind is Emote:
        return f"* {event.nick} {event.text}"
    if kind is Joined:
        return f"* {event.nick} joined"
    if kind is Parted:
        return f"* {event.nick} left the room" + (f" ({event.reason})" if event.reason else "")
    if kind is TopicChanged:
        if event.text:
            return f"* {event.nick} set the topic: {event.text}"
        return f"* {event.nick} cleared the topic"
    if kind is Left:
        return f"* {event.nick} left ({event.reason})"
    if kind is Renamed:
        return f"* {event.old} is now known as {event.new}"
    if kind is Private:
        if event.action:
            return f"[private] * {event.sender} {event.text}"
        return f"[private] {event.sender}: {event.text}"
    if kind is PrivateSent:
        if event.action:
            return f"-> {event.recipient}: * you {event.text}"
        return f"-> {event.recipient}: {event.text}"
    if kind is Notice:
        return f"* {event.text}"
    if kind is Refusal:
        return f"! {event.text}"
    if kind is Welcome:
        return f"* you are {event.nick}; {event.count} in {event.room}: " + _more(
            event.count, event.members
        )
    if kind is RoomJoined:
        line = f"* you joined {event.room}; {event.count} here: " + _more(event.count, event.members)
        return line + (f"; topic: {event.topic}" if event.topic else "")
    if kind is RoomParted:
        if event.current is None:
            return f"* you left {event.room}; you are in no room now (/join #room)"
        return f"* you left {event.room}; your lines go to {event.current}"
    if kind is CurrentRoom:
        return f"* your lines go to {event.room}"
    if kind is WhoList:
        listing = ", ".join(f"{nick} ({via})" for nick, via in event.members)
        return f"* {len(event.members)} in {event.room}: {listing}"
    if kind is RoomList:
        total = len(event.rooms)
        matching = f" with {event.containing!r} in the name" if event.containing else ""
        lines = [f"* {total} room{'' if total == 1 else 's'}{matching}:"]
        for name, count, topic in event.rooms[:ROOMS_SHOWN]:
            lines.append(f"*   {name} ({count})" + (f": {topic}" if topic else ""))
        if total > ROOMS_SHOWN:
            lines.append(
                f"*   ... and {total - ROOMS_SHOWN} more (/rooms TEXT lists those with TEXT in the name)"
            )
        return "\n".join(lines)
    if kind is TopicIs:
        if not event.text:
            return f"* {event.room} has no topic"
        return f"* topic of {event.room}: {event.text} (set by {event.nick})"
    if kind is HelpText:
        return "\n".join(f"* {line}" for line in event.lines)
    if kind is HistoryStart:
        return f"* history of {event.room}"
    if kind is Replayed:
        return f"[{_when(event.event.time, event.now)}] {_body(event.event)}"
    if kind is HistoryEnd:
        return "* end of history"
    raise TypeError(f"no rendering for {event!r}")


def as_line(event, current: str | None = None) -> str:
    """
    What a line-protocol user whose lines go to room C{current} sees for
    C{event}, without the line end (several lines are joined by LF).

    Room events from another room than C{current} are marked C{[#room] }.
    """
    body = _body(event)
    if type(event) in ROOM_EVENTS and event.room != current:
        return f"[{event.room}] {body}"
    return body


def as_bytes(event, line_end: bytes = LINE_END, current: str | None = None) -> bytes:
    """
    C{as_line(event)} encoded as UTF-8, each line ending in C{line_end} (CRLF by
    default); nothing at all for tags without text (L{TagMessage}), which line users
    do not see.
    """
    if type(event) is TagMessage:
        return b""
    line = as_line(event, current)
    if "\n" in line:
        line = line.replace("\n", line_end.decode("ascii") or "\n")
    return line.encode("utf-8", errors="replace") + line_end


class RenderCache:
    """
    Renders each event once per way of seeing it (from its own room, or from
    another), however many recipients and batches it appears in.

    Keyed by the event's identity (hashing a dataclass field by field on every
    lookup costs more than it saves), holding the event so its id stays its
    own.  Entries are only reused within one turn's fan-out, so the cache is
    simply cleared when it reaches C{size} entries or C{max_bytes} of text:
    memory stays bounded whatever the line lengths.
    """

    def __init__(self, line_end: bytes = LINE_END, size: int = 8192,
                 max_bytes: int = 4 * 1024 * 1024) -> None:
        self._line_end = line_end
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._cache: dict = {}

    def __call__(self, event, current: str | None = None) -> bytes:
        """The encoded line for C{event} as a user in room C{current} sees it."""
        marked = type(event) in ROOM_EVENTS and event.room != current
        key = -id(event) if marked else id(event)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is event:
            return hit[1]
        data = as_bytes(event, self._line_end, current)
        if len(self._cache) >= self._size or self._bytes + len(data) > self._max_bytes:
            self._cache.clear()
            self._bytes = 0
        self._cache[key] = (event, data)
        self._bytes += len(data)
        return data

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def size_bytes(self) -> int:
        """Bytes of encoded text held now."""
        return self._bytes

    def encode(self, batch, current: str | None = None) -> bytes:
        """
        A whole batch as bytes for a user in room C{current}.

        Each shared run is encoded once per way of seeing it (kept on the run,
        which lives one turn) with the offsets of its lines, and each user's
        batch is cut from it by slicing: a sender's own lines cost slices,
        not a pass over the turn.
        """
        parts = batch.parts
        if len(parts) == 1:
            shared, start, stop = parts[0]
            data, offsets = self._run(shared, current)
            if start == 0 and stop == len(shared.events):
                return data
            return data[offsets[start]:offsets[stop]]
        chunks = []
        for shared, start, stop in parts:
            data, offsets = self._run(shared, current)
            chunks.append(data if start == 0 and stop == len(shared.events)
                          else data[offsets[start]:offsets[stop]])
        return b"".join(chunks)

    def _run(self, shared, current) -> tuple:
        # Keyed by the line end too: front-ends with other line ends share the run.
        key = (self._line_end, current)
        hit = shared.encoded.get(key)
        if hit is None:
            lines = [self(event, current) for event in shared.events]
            hit = shared.encoded[key] = (
                b"".join(lines), list(accumulate(map(len, lines), initial=0))
            )
        return hit
