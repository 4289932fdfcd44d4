# -*- test-case-name: tests.test_render -*-
"""Events to the text lines TCP and UDP users see, and text hygiene.

Rendering is pure, and L{RenderCache} makes sure a line said to a hundred
people is formatted and encoded once.  L{scrub} keeps one user's bytes from ever reaching another
user's terminal as a control sequence.
"""

import re
from chatservice.core.events import (
    Emote,
    Joined,
    Left,
    Notice,
    Private,
    PrivateSent,
    Refusal,
    Renamed,
    Said,
)

LINE_END = b"\r\n"

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


def as_line(event) -> str:
    """The line, without its line end, that a line-protocol user sees for C{event}."""
    kind = type(event)
    if kind is Said:
        return f"{event.nick}: {event.text}"
    if kind is Joined:
        return f"* {event.nick} joined"
    if kind is Left:
        return f"* {event.nick} left ({event.reason})"
    if kind is Renamed:
        return f"* {event.old} is now known as {event.new}"
    if kind is Emote:
        return f"* {event.nick} {event.text}"
    if kind is Private:
        return f"[private] {event.sender}: {event.text}"
    if kind is PrivateSent:
        return f"-> {event.recipient}: {event.text}"
    if kind is Notice:
        return f"* {event.text}"
    if kind is Refusal:
        return f"! {event.text}"
    raise TypeError(f"no rendering for {event!r}")


def as_bytes(event, line_end: bytes = LINE_END) -> bytes:
    """C{as_line(event)} encoded as UTF-8, ending in C{line_end} (CRLF by default)."""
    return as_line(event).encode("utf-8", errors="replace") + line_end


class RenderCache:
    """
    Renders each event once, however many recipients and views it appears in.

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
        self._cache: dict[int, tuple[object, bytes]] = {}

    def __call__(self, event) -> bytes:
        """The encoded line for C{event}."""
        hit = self._cache.get(id(event))
        if hit is not None and hit[0] is event:
            return hit[1]
        data = as_bytes(event, self._line_end)
        if len(self._cache) >= self._size or self._bytes + len(data) > self._max_bytes:
            self._cache.clear()
            self._bytes = 0
        self._cache[id(event)] = (event, data)
        self._bytes += len(data)
        return data

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def size_bytes(self) -> int:
        """Bytes of encoded text held now."""
        return self._bytes
