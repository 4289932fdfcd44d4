# -*- test-case-name: tests.test_webwire -*-
"""The WebSocket protocol's messages: JSON objects to command values, event values to JSON.

Pure, no I/O (docs/web-protocol.md is the reference).  Every message is one
JSON object with a C{type}.  Events go out as their values' fields under the
event's name in kebab case (C{Said} is C{said}, C{RoomJoined} C{room-joined});
a replayed line is C{replayed} with the line under C{event}.  Message ids are
63-bit integers, beyond what a JavaScript number holds exactly, so they travel
as decimal strings both ways.
"""

import dataclasses
import json
import re
from dataclasses import dataclass

from chatservice.core.commands import (
    HISTORY_MAX, History, Join, Me, Msg, Nick, Part, Quit, Rooms, Say, Topic, Who,
)
from chatservice.core.errors import BadUsage, TooLong

#: Fields that hold message ids (sent as strings).
_ID_FIELDS = frozenset({"id"})
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_ID = re.compile(r"[0-9]{1,19}\Z")


@dataclass(frozen=True, slots=True)
class Hello:
    """
    C{hello}: the nick to log in with, and the rooms to (re)join afterwards,
    each with the id of the last line seen there (None: none seen).
    """

    nick: str
    rooms: dict | None


def type_name(event) -> str:
    """C{RoomJoined} -> C{room-joined}."""
    return _CAMEL.sub("-", type(event).__name__).lower()


def _value(name: str, value):
    if name in _ID_FIELDS and type(value) is int:
        return str(value)
    if dataclasses.is_dataclass(value):
        return event_object(value)
    if type(value) is tuple:
        return [_value("", item) for item in value]
    return value


def event_object(event) -> dict:
    """An event value as the JSON object the page gets (before encoding)."""
    out = {"type": type_name(event)}
    for field in dataclasses.fields(event):
        out[field.name] = _value(field.name, getattr(event, field.name))
    return out


def encode(event) -> bytes:
    """An event value as one WebSocket text message (UTF-8 JSON)."""
    return json.dumps(event_object(event), ensure_ascii=False, separators=(",", ":")).encode()


# -- in: the page's messages ---------------------------------------------------


def _text(message: dict, name: str, max_bytes: int, required: bool = True,
          default: str = "") -> str:
    value = message.get(name)
    if value is None and not required:
        return default
    if type(value) is not str:
        raise BadUsage(f"'{name}' must be a string", subject=name)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # JSON's "\ud800": a lone surrogate, not a character
        raise BadUsage(f"'{name}' is not valid Unicode (a lone surrogate)", subject=name)
    if max_bytes and size > max_bytes:
        raise TooLong(f"message too long (max {max_bytes} bytes)")
    return value


def _optional_text(message: dict, name: str, max_bytes: int) -> str | None:
    if message.get(name) is None:
        return None
    return _text(message, name, max_bytes)


def message_id(value, name: str = "id") -> int | None:
    """A message id from the page: a decimal string (or a small integer), or None."""
    if value is None:
        return None
    if type(value) is int and 0 <= value < 1 << 63:
        return value
    if type(value) is str and _ID.match(value) and int(value) < 1 << 63:
        return int(value)
    raise BadUsage(f"'{name}' must be a message id (a string of digits)", subject=name)


def _count(message: dict) -> int | None:
    value = message.get("count")
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= HISTORY_MAX:
        raise BadUsage(f"'count' must be an integer from 1 to {HISTORY_MAX}", subject="count")
    return value


def _rooms(message: dict) -> dict | None:
    rooms = message.get("rooms")
    if rooms is None:
        return None
    if type(rooms) is not dict:
        raise BadUsage("'rooms' must be an object of room name to last id", subject="rooms")
    out = {}
    for name, last in rooms.items():
        _text({"room": name}, "room", 0)  # a room name that cannot be shown is refused here
        out[name] = message_id(last, f"rooms.{name}")
    return out


def parse(payload: bytes | str, max_text: int):
    """
    One message from the page as a L{Hello} or a command value.

    @param max_text: the longest text, in UTF-8 bytes (C{--max-line}).
    @raise BadUsage: not JSON, not an object, an unknown C{type} or a bad field.
    @raise TooLong: a text longer than C{max_text}.
    """
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadUsage("not JSON: each message is one JSON object")
    if type(message) is not dict:
        raise BadUsage("each message is one JSON object")
    kind = message.get("type")
    if type(kind) is not str:
        raise BadUsage("a message needs a 'type'")
    room = _optional_text(message, "room", max_text)
    if kind == "hello":
        return Hello(_text(message, "nick", max_text), _rooms(message))
    if kind == "say":
        return Say(_text(message, "text", max_text), room=room)
    if kind == "me":
        return Me(_text(message, "text", max_text), room=room)
    if kind == "msg":
        return Msg(_text(message, "nick", max_text), _text(message, "text", max_text),
                   action=message.get("action") is True)
    if kind == "nick":
        return Nick(_text(message, "nick", max_text))
    if kind == "join":
        return Join(_text(message, "room", max_text), since=message_id(message.get("since"),
                                                                       "since"))
    if kind == "part":
        return Part(room, _text(message, "reason", max_text, required=False))
    if kind == "rooms":
        return Rooms(_text(message, "containing", max_text, required=False))
    if kind == "who":
        return Who(room)
    if kind == "topic":
        return Topic(room, _optional_text(message, "text", max_text))
    if kind == "history":
        return History(room, _count(message), before=message_id(message.get("before"), "before"),
                       after=message_id(message.get("after"), "after"))
    if kind == "quit":
        return Quit(_text(message, "reason", max_text, required=False))
    raise BadUsage(f"unknown message type: {kind}", subject=kind)
