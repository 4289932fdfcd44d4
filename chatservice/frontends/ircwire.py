# -*- test-case-name: tests.test_ircwire -*-
"""IRC messages as values: parsing one line, and building one, per the Modern IRC documents.

A line is C{[@tags ][:source ]COMMAND [params...] [:trailing]}.  The message part
(source, command, parameters) may be at most L{MAX_MESSAGE} bytes with its CRLF;
the tag section, C{@} to its space, at most L{MAX_TAG_SECTION}, of which the
client's own tags (C{+name}) at most L{MAX_CLIENT_TAGS}.  Pure: no I/O.
"""

from dataclasses import dataclass, field

MAX_MESSAGE = 512
"""Bytes of the message part, CRLF included (RFC 1459)."""

MAX_TAG_SECTION = 8191
"""Bytes of the tag section, the leading C{@} and trailing space included (IRCv3 message-tags)."""

MAX_CLIENT_TAGS = 4094
"""Bytes of client-only tags a client may send (IRCv3 message-tags)."""

MAX_LINE = MAX_TAG_SECTION + MAX_MESSAGE
"""The longest line read at all; anything longer is refused with 417 and skipped."""

_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


class TooLong(ValueError):
    """A line over the limits: the server answers 417 ERR_INPUTTOOLONG."""


@dataclass(frozen=True)
class Message:
    """One parsed line: C{command} upper-cased, C{params} with the trailing one last."""

    command: str
    params: tuple = ()
    tags: dict = field(default_factory=dict)
    source: str | None = None
    client_tags_size: int = 0


def escape_tag_value(value: str) -> str:
    """A tag value as it goes on the wire."""
    return "".join(_ESCAPES.get(c, c) for c in value)


def unescape_tag_value(raw: str) -> str:
    """The value of a tag as sent: escapes undone, an unknown escape is its character, a
    trailing lone backslash dropped."""
    if "\\" not in raw:
        return raw
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            if i + 1 < len(raw):
                nxt = raw[i + 1]
                out.append(_UNESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _parse_tags(section: str) -> tuple[dict, int]:
    tags: dict = {}
    client_size = 0
    for item in section.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        tags[key] = unescape_tag_value(value)
        if key.startswith("+"):
            client_size += len(item.encode("utf-8")) + 1
    return tags, client_size


def parse(line: bytes) -> Message | None:
    """
    One line without its line end; None for an empty line (ignored, as servers do).

    @raise TooLong: the tag section or the message part is over its limit.
    """
    tags: dict = {}
    client_size = 0
    if line.startswith(b"@"):
        space = line.find(b" ")
        if space < 0:
            section, line = line[1:], b""
        else:
            section, line = line[1:space], line[space + 1 :]
        if len(section) + 2 > MAX_TAG_SECTION:
            raise TooLong("tag section too long")
        tags, client_size = _parse_tags(section.decode("utf-8", errors="replace"))
        if client_size > MAX_CLIENT_TAGS:
            raise TooLong("client tags too long")
    line = line.lstrip(b" ")
    if len(line) + 2 > MAX_MESSAGE:
        raise TooLong("message too long")
    text = line.decode("utf-8", errors="replace")
    source = None
    if text.startswith(":"):
        source, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
    if not text:
        return None
    trailing = None
    if " :" in text:
        text, trailing = text.split(" :", 1)
    elif text.startswith(":"):
        text, trailing = "", text[1:]
    words = text.split()
    if not words:
        return None
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return Message(words[0].upper(), tuple(params), tags, source, client_size)


def tag_section(tags: dict) -> str:
    """C{@a=b;c } for C{tags} (in order), or C{""} if there are none."""
    if not tags:
        return ""
    items = [k if v in (None, "") else f"{k}={escape_tag_value(v)}" for k, v in tags.items()]
    return "@" + ";".join(items) + " "


def line(source: str | None, command: str, *params: str, tags: dict | None = None) -> str:
    """
    One message, CRLF included; the last parameter is written trailing (after C{:})
    only when it must be: empty, holding a space, or starting with C{:}.
    """
    parts = [] if source is None else [":" + source]
    parts.append(command)
    if params:
        *middle, last = params
        parts.extend(middle)
        if not last or " " in last or last.startswith(":"):
            parts.append(":" + last)
        else:
            parts.append(last)
    return (tag_section(tags) if tags else "") + " ".join(parts) + "\r\n"


def trailing(source: str | None, command: str, *params: str, tags: dict | None = None) -> str:
    """Like L{line}, with the last parameter always written after C{:} (free text)."""
    parts = [] if source is None else [":" + source]
    parts.append(command)
    *middle, last = params
    parts.extend(middle)
    parts.append(":" + last)
    return (tag_section(tags) if tags else "") + " ".join(parts) + "\r\n"
