"""
Tests for L{chatservice.service.ChatService}: the ordered, bounded stop.

Participants are fakes whose C{close} fires when the test says; children are
services that note when they stop; time is a L{Clock}.
"""

import signal

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatservice.interfaces import IParticipant
from chatservice.limits import Admission
from chatservice.nicks import NickRegistry
from chatservice.room import Room
from chatservice.service import ChatService


@implementer(IParticipant)
class ClosingParticipant:
    """A participant whose C{close} is noted in C{journal} and fires on C{gone()}."""

    via = "fake"

    def __init__(self, nick, journal):
        self.nick = nick
        self._journal = journal
        self.reasons = []
        self._closing = []

    def deliver(self, events):
        pass

    def close(self, reason):
        self.reasons.append(reason)
        self._journal.append(f"close {self.nick}: {reason}")
        d = defer.Deferred()
        self._closing.append(d)
        return d

    def gone(self):
        closing, self._closing = self._closing, []
        for d in closing:
            d.callback(None)


class NotingService(Service):
    """A child that notes its stop in C{journal}; C{stopService} may be held."""

    def __init__(self, name, journal, hold=False):
        self.setName(name)
        self._journal = journal
        self._hold = hold
        self.stopping = None

    def stopService(self):
        super().stopService()
        self._journal.append(f"stop {self.name}")
        if self._hold:
            self.stopping = defer.Deferred()
            return self.stopping
        return None


class StopTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.journal = []
        self.room = Room(clock=self.clock)
        self.service = ChatService(
            self.room, NickRegistry(), Admission(10, 10), self.clock, grace=2.0
        )
        self.alice = self.present("alice")
        self.bob = self.present("bob")

    def present(self, nick, joined=True):
        participant = ClosingParticipant(nick, self.journal)
        self.assertTrue(verifyObject(IParticipant, participant))
        self.room.enter(participant)
        if joined:
            self.room.join(participant)
        return participant

    def add_child(self, name, hold=False):
        child = NotingService(name, self.journal, hold)
        child.setServiceParent(self.service)
        return child

    def test_start_starts_children(self):
        child = self.add_child("tcp")
        with capturedLogs() as events:
            self.service.startService()
        self.assertTrue(child.running)
        self.assertIn("chatroom starting", [e["log_format"] for e in events])

    def test_closes_everyone_then_stops_children(self):
        tcp = self.add_child("tcp")
        udp = self.add_child("udp")
        self.service.startService()
        d = self.service.stopService()
        self.assertEqual(
            self.journal,
            ["close alice: server shutting down", "close bob: server shutting down"],
        )
        self.assertNoResult(d)
        self.assertTrue(tcp.running)
        self.assertTrue(udp.running)
        self.alice.gone()
        self.assertNoResult(d)
        self.assertTrue(tcp.running)
        self.bob.gone()
        self.successResultOf(d)
        self.assertEqual(sorted(self.journal[2:]), ["stop tcp", "stop udp"])
        self.assertFalse(tcp.running)
        self.assertFalse(udp.running)
        self.assertFalse(self.service.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_users_not_yet_joined_are_closed_too(self):
        waiting = self.present("newcomer", joined=False)
        self.service.startService()
        self.service.stopService()
        self.assertEqual(waiting.reasons, ["server shutting down"])

    def test_waits_for_children_to_stop(self):
        child = self.add_child("tcp", hold=True)
        self.service.startService()
        d = self.service.stopService()
        self.alice.gone()
        self.bob.gone()
        self.assertEqual(self.journal[-1], "stop tcp")
        self.assertNoResult(d)
        child.stopping.callback(None)
        self.successResultOf(d)

    def test_grace_ends_the_wait(self):
        child = self.add_child("tcp")
        self.service.startService()
        with capturedLogs() as events:
            d = self.service.stopService()
            self.alice.gone()  # bob never finishes closing
            self.clock.advance(1.9)
            self.assertNoResult(d)
            self.assertTrue(child.running)
            self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertFalse(child.running)
        self.assertEqual(self.journal[-1], "stop tcp")
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["timeout"], 2.0)
        self.assertIn("grace", warnings[0]["log_format"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_warning_when_everyone_closes_in_time(self):
        self.add_child("tcp")
        self.service.startService()
        with capturedLogs() as events:
            d = self.service.stopService()
            self.alice.gone()
            self.bob.gone()
        self.successResultOf(d)
        self.assertEqual([e for e in events if e["log_level"] is LogLevel.warn], [])

    def test_late_close_after_grace_is_harmless(self):
        self.add_child("tcp")
        self.service.startService()
        d = self.service.stopService()
        self.clock.advance(2.0)
        self.successResultOf(d)
        self.alice.gone()
        self.bob.gone()

    def test_empty_room_stops_at_once(self):
        clock = Clock()
        room = Room(clock=clock)
        service = ChatService(room, NickRegistry(), Admission(10, 10), clock)
        child = NotingService("tcp", self.journal)
        child.setServiceParent(service)
        service.startService()
        self.successResultOf(service.stopService())
        self.assertFalse(child.running)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failing_close_does_not_stop_the_shutdown(self):
        @implementer(IParticipant)
        class Broken:
            nick = "broken"
            via = "fake"

            def deliver(self, events):
                pass

            def close(self, reason):
                raise RuntimeError("cannot close")

        self.room.enter(Broken())
        child = self.add_child("tcp")
        self.service.startService()
        d = self.service.stopService()
        self.alice.gone()
        self.bob.gone()
        self.successResultOf(d)
        self.assertFalse(child.running)


class ThreadCallReactor(MemoryReactorClock):
    """A MemoryReactorClock with C{callFromThread}, which runs the call at once."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class SignalTests(SynchronousTestCase):
    """Under twistd the service takes SIGTERM and SIGINT, so a stop exits 0."""

    def setUp(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
        self.reactor = ThreadCallReactor()

    def service(self, **kwargs):
        return ChatService(
            Room(clock=self.reactor), NickRegistry(), Admission(10, 10), self.reactor,
            **kwargs,
        )

    def test_takes_signals_once_the_reactor_runs(self):
        before = signal.getsignal(signal.SIGTERM)
        service = self.service(handle_signals=True)
        service.startService()
        # twistd starts services before the reactor installs its own handlers.
        self.assertEqual(signal.getsignal(signal.SIGTERM), before)
        for f, args, kwargs in self.reactor.whenRunningHooks:
            f(*args, **kwargs)
        handler = signal.getsignal(signal.SIGTERM)
        self.assertNotEqual(handler, before)
        self.assertEqual(signal.getsignal(signal.SIGINT), handler)
        self.reactor.running = True
        handler(signal.SIGTERM, None)
        self.assertTrue(self.reactor.hasStopped)

    def test_leaves_signals_alone_by_default(self):
        before = signal.getsignal(signal.SIGTERM)
        self.service().startService()
        self.assertEqual(self.reactor.whenRunningHooks, [])
        self.assertEqual(signal.getsignal(signal.SIGTERM), before)
