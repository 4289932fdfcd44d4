# -*- test-case-name: tests.test_hub -*-
"""
Small fakes for the core tests: a participant that records what the hub hands it, sinks, a
history store that answers when the test says, and a registry that answers later.
"""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from chatservice.core.events import PUBLIC_LINES, STORED_EVENTS
from chatservice.core.interfaces import IEventSink, IHistoryStore, INickRegistry, IParticipant
from chatservice.core.names import fold
from chatservice.core.nicks import NickRegistry
from chatservice.core.render import as_line


class DeliveryError(Exception):
    """What L{FailingParticipant} raises from C{deliver}."""


class SinkError(Exception):
    """What the failing sinks raise."""


class RegistryError(Exception):
    """What L{BrokenRegistry} raises: an unexpected error, not a refusal."""


class StoreError(Exception):
    """What L{FakeHistory} fails a query with when told to."""


@implementer(IParticipant)
class FakeParticipant:
    """
    Records every C{deliver()} call (the batch itself, so tests can compare the shared runs in
    its C{parts}) and every C{close()} reason; C{close} answers with an already-fired Deferred.
    """

    room = None
    echo = False

    def __init__(self, nick: str | None = None, via: str = "tcp") -> None:
        self.nick = nick
        self.via = via
        self.deliveries: list[tuple] = []
        self.closed: list[str] = []
        self.peer = "192.0.2.1:50000"
        self.paused = False  # like UDP, it cannot stop its sender: this only records
        self.pauses = 0

    def deliver(self, batch):
        self.deliveries.append(batch)

    def close(self, reason):
        self.closed.append(reason)
        return defer.succeed(None)

    def pause_input(self):
        self.paused = True
        self.pauses += 1

    def resume_input(self):
        self.paused = False

    @property
    def events(self) -> list:
        """Every event delivered so far, in order, across calls."""
        return [event for events in self.deliveries for event in events]

    def lines(self) -> list[str]:
        """Every event delivered so far, rendered as the lines a TCP user reads."""
        return [line for event in self.events
                for line in as_line(event, self.room).split("\n")]

    def clear(self) -> None:
        """Forget what was delivered so far."""
        self.deliveries.clear()


class FailingParticipant(FakeParticipant):
    """A participant whose C{deliver()} raises L{DeliveryError} while C{failing} is set."""

    failing = True

    def deliver(self, events):
        if self.failing:
            raise DeliveryError("cannot deliver")
        super().deliver(events)


class ViaFailsParticipant(FakeParticipant):
    """A participant whose C{via} raises L{RuntimeError} once C{broken} is set."""

    def __init__(self, nick=None, via="tcp"):
        self.broken = False
        super().__init__(nick, via)

    @property
    def via(self):
        if self.broken:
            raise RuntimeError("via is broken")
        return self._via

    @via.setter
    def via(self, value):
        self._via = value


@implementer(IEventSink)
class RecordingSink:
    """Keeps every event the room records."""

    def __init__(self) -> None:
        self.recorded: list = []

    def record_turn(self, events):
        self.recorded.extend(events)


@implementer(IEventSink)
class RaisingSink:
    """A sink whose C{record_turn} raises L{SinkError}."""

    def record_turn(self, events):
        raise SinkError("sink is down")


@implementer(IEventSink)
class FailingDeferredSink:
    """A sink whose C{record_turn} answers with a failed Deferred."""

    def record_turn(self, events):
        return defer.fail(SinkError("sink lost it"))


@implementer(INickRegistry)
class DeferredRegistry:
    """
    A registry that answers C{reserve} later: each call returns an unfired Deferred the test fires
    with L{answer}; C{rename} and C{release} go straight to a real L{NickRegistry}.
    """

    def __init__(self) -> None:
        self.real = NickRegistry()
        self.waiting: list[tuple[defer.Deferred, str, object]] = []

    def reserve(self, nick, owner):
        d = defer.Deferred()
        self.waiting.append((d, nick, owner))
        return d

    def answer(self) -> None:
        """Answer the oldest waiting C{reserve} as the real registry would."""
        d, nick, owner = self.waiting.pop(0)
        try:
            result = self.real.reserve(nick, owner)
        except Exception as error:
            d.errback(error)
        else:
            d.callback(result)

    def rename(self, old, new, owner):
        return self.real.rename(old, new, owner)

    def release(self, nick, owner):
        return self.real.release(nick, owner)


@implementer(INickRegistry)
class BrokenRegistry:
    """A registry whose C{reserve} and C{rename} raise an unexpected L{RegistryError}."""

    def __init__(self, broken: set[str]) -> None:
        self.real = NickRegistry()
        self.broken = broken

    def reserve(self, nick, owner):
        if "reserve" in self.broken:
            raise RegistryError("reserve exploded")
        return self.real.reserve(nick, owner)

    def rename(self, old, new, owner):
        if "rename" in self.broken:
            raise RegistryError("rename exploded")
        return self.real.rename(old, new, owner)

    def release(self, nick, owner):
        return self.real.release(nick, owner)


@implementer(IHistoryStore)
class FakeHistory:
    """
    An in-memory L{IHistoryStore} whose C{recent} answers as the test says.

    C{mode} is "now" (an already-fired Deferred), "late" (an unfired Deferred the test fires
    with L{answer} or L{fail}), or "never" (an unfired Deferred nobody fires).  Each query is
    kept in C{asks} as (Deferred, room key, limit, before); the answer is the last C{limit}
    public lines of the room below C{before} among what was recorded when the query was made
    (what the real store does: what was recorded is readable, written or not).
    """

    def __init__(self, mode: str = "now") -> None:
        self.mode = mode
        self.recorded: list = []
        self.asks: list[tuple[defer.Deferred, str, int, int]] = []
        self._answers: dict = {}  # id(Deferred) -> the events it will answer with

    def record_turn(self, events):
        for event in events:
            if type(event) not in STORED_EVENTS:
                raise AssertionError(f"{event!r} is not for the history")
        self.recorded.extend(events)

    def lines(self, room_key: str, limit: int, before: int, after=None) -> list:
        """What C{recent} answers now."""
        low = -1 if after is None else after
        found = [
            event for event in self.recorded
            if type(event) in PUBLIC_LINES and fold(event.room) == room_key
            and low < event.id < before
        ]
        if limit <= 0:
            return []
        return found[:limit] if after is not None else found[-limit:]

    def recent(self, room_key, limit, before, after=None):
        d = defer.Deferred()
        self.asks.append((d, room_key, limit, before) + (() if after is None else (after,)))
        self._answers[id(d)] = self.lines(room_key, limit, before, after)
        if self.mode == "now":
            d.callback(self._answers.pop(id(d)))
        return d

    def answer(self, index: int = -1) -> None:
        """Answer the query C{asks[index]} (the latest by default)."""
        d = self.asks[index][0]
        d.callback(self._answers.pop(id(d)))

    def fail(self, index: int = -1, error: Exception | None = None) -> None:
        """Fail the query C{asks[index]} (the latest by default) with a L{StoreError}."""
        d = self.asks[index][0]
        self._answers.pop(id(d), None)
        d.errback(error if error is not None else StoreError("disk on fire"))

    def newest_id(self):
        return defer.succeed(max((event.id for event in self.recorded), default=0))


def line_user(factory, clock, nick: str, host: str = "127.0.0.1"):
    """
    A line-protocol user of C{factory} on a C{StringTransport}, joined as C{nick} (nc style),
    its welcome cleared.

    @return: C{(protocol, transport)}.
    """
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    proto = factory.buildProtocol(IPv4Address("TCP", host, 50000))
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(nick.encode() + b"\n")
    clock.advance(0)
    transport.clear()
    return proto, transport
