# -*- test-case-name: tests.test_room -*-
"""
Small fakes for the core tests: a participant that records what the room hands it, sinks, and a
registry that answers later.
"""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from chatservice.core.interfaces import IEventSink, INickRegistry, IParticipant
from chatservice.core.nicks import NickRegistry
from chatservice.core.render import as_line


class DeliveryError(Exception):
    """What L{FailingParticipant} raises from C{deliver}."""


class SinkError(Exception):
    """What the failing sinks raise."""


class RegistryError(Exception):
    """What L{BrokenRegistry} raises: an unexpected error, not a refusal."""


@implementer(IParticipant)
class FakeParticipant:
    """
    Records every C{deliver()} call (the batch itself, so tests can compare the shared runs in
    its C{parts}) and every C{close()} reason; C{close} answers with an already-fired Deferred.
    """

    room = None

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

    def record(self, event):
        self.recorded.append(event)


@implementer(IEventSink)
class RaisingSink:
    """A sink whose C{record} raises L{SinkError}."""

    def record(self, event):
        raise SinkError("sink is down")


@implementer(IEventSink)
class FailingDeferredSink:
    """A sink whose C{record} answers with a failed Deferred."""

    def record(self, event):
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
