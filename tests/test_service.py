"""
Tests for L{chatservice.service.ChatService}: the ordered, bounded stop, what
it does when a listener cannot listen, and the log observer it hands twistd.

Participants are fakes whose C{close} fires when the test says; children are
services that note when they stop; time is a L{Clock}.
"""

import os
import shutil
import signal
import tempfile

from twisted.application.service import Application, IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatservice.core.events import Left
from chatservice.core.hub import Hub
from chatservice.core.interfaces import IHistoryStore, IParticipant
from chatservice.core.limits import Admission
from chatservice.core.nicks import NickRegistry
from chatservice.core.session import Session
from chatservice.service import ChatService


@implementer(IParticipant)
class ClosingParticipant:
    """
    A participant whose C{close} is noted in C{journal} (under C{label}, its
    nick-to-be) and fires on C{gone()}.
    """

    via = "fake"

    echo = False
    peer = "192.0.2.2:40000"
    room = None

    def __init__(self, label, journal):
        self.nick = None  # the session sets it once the nick is reserved
        self.label = label
        self._journal = journal
        self.reasons = []
        self._closing = []

    def deliver(self, events):
        pass

    def pause_input(self):
        pass

    def resume_input(self):
        pass

    def close(self, reason):
        self.reasons.append(reason)
        self._journal.append(f"close {self.label}: {reason}")
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


class CannotListenService(Service):
    """A listener whose port is taken: raises like Twisted's listeners do."""

    def __init__(self, during):
        self._during = during

    def _fail(self):
        raise CannotListenError("127.0.0.1", 5555, OSError(98, "Address already in use"))

    def privilegedStartService(self):
        super().privilegedStartService()
        if self._during == "privilegedStartService":
            self._fail()

    def startService(self):
        super().startService()
        if self._during == "startService":
            self._fail()


class _StopHarness(SynchronousTestCase):
    """A service with two users present; children note their stops in C{journal}."""

    def setUp(self):
        self.clock = Clock()
        self.journal = []
        self.hub = self.make_hub()
        self.registry = NickRegistry()
        self.service = ChatService(
            self.hub, self.registry, Admission(10, 10), self.clock, grace=2.0
        )
        self.alice = self.present("alice")
        self.bob = self.present("bob")

    def make_hub(self):
        return Hub(self.clock)

    def present(self, nick, joined=True):
        """A user with a real session: joined as C{nick}, or still to choose a nick."""
        participant = ClosingParticipant(nick, self.journal)
        self.assertTrue(verifyObject(IParticipant, participant))
        Session(participant, self.hub, self.registry, self.clock).start(
            nick if joined else None
        )
        self.clock.advance(0)  # the welcome's turn
        if joined:
            self.assertEqual(participant.nick, nick)
        return participant

    def add_child(self, name, hold=False):
        child = NotingService(name, self.journal, hold)
        child.setServiceParent(self.service)
        return child


class StopTests(_StopHarness):
    """Goodbyes first, within a bounded grace; then the children stop."""

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

    def test_nobody_connected_stops_at_once(self):
        clock = Clock()
        service = ChatService(Hub(clock), NickRegistry(), Admission(10, 10), clock)
        child = NotingService("tcp", self.journal)
        child.setServiceParent(service)
        service.startService()
        self.successResultOf(service.stopService())
        self.assertFalse(child.running)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failing_close_does_not_stop_the_shutdown(self):
        @implementer(IParticipant)
        class Broken:
            nick = None
            via = "fake"
            echo = False
            peer = "192.0.2.9:40000"
            room = None

            def deliver(self, events):
                pass

            def pause_input(self):
                pass

            def resume_input(self):
                pass

            def close(self, reason):
                raise RuntimeError("cannot close")

        Session(Broken(), self.hub, self.registry, self.clock).start("broken")
        self.clock.advance(0)
        child = self.add_child("tcp")
        self.service.startService()
        d = self.service.stopService()
        self.alice.gone()
        self.bob.gone()
        self.successResultOf(d)
        self.assertFalse(child.running)
        # The session that ended it logs the failure; nobody else is held up by it.
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class StopOrderTests(_StopHarness):
    """
    Stream listeners stop first, so nobody connects during the goodbyes;
    datagram listeners stop last, so UDP goodbyes can still be sent and acknowledged.
    """

    def add_stream(self, name, hold=False):
        child = NotingService(name, self.journal, hold)
        self.service.add_stream_listener(child)
        return child

    def add_datagram(self, name):
        child = NotingService(name, self.journal)
        self.service.add_datagram_listener(child)
        return child

    def test_stream_listeners_stop_before_the_goodbyes(self):
        tcp = self.add_stream("tcp", hold=True)
        udp = self.add_datagram("udp")
        self.service.startService()
        d = self.service.stopService()
        self.assertEqual(self.journal, ["stop tcp"])
        self.assertFalse(tcp.running)
        self.assertTrue(udp.running)
        self.assertEqual(self.alice.reasons, [])
        tcp.stopping.callback(None)  # the listening socket is closed
        self.assertEqual(
            self.journal,
            ["stop tcp", "close alice: server shutting down", "close bob: server shutting down"],
        )
        self.assertTrue(udp.running)
        self.assertNoResult(d)
        self.alice.gone()
        self.bob.gone()
        self.assertEqual(self.journal[-1], "stop udp")
        self.assertFalse(udp.running)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_child_failing_to_stop_is_logged_and_the_stop_completes(self):
        """A datagram listener whose stop fails: logged once, and the service still stops."""
        self.add_stream("tcp")
        udp = self.add_datagram("udp")
        udp.stopService = lambda: defer.fail(RuntimeError("port would not close"))
        self.service.startService()
        d = self.service.stopService()
        self.alice.gone()
        self.bob.gone()
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_datagram_listener_waits_out_the_grace(self):
        self.add_stream("tcp")
        udp = self.add_datagram("udp")
        self.service.startService()
        d = self.service.stopService()
        self.clock.advance(1.9)
        self.assertTrue(udp.running)
        self.clock.advance(0.1)
        self.assertFalse(udp.running)
        self.successResultOf(d)

    def test_every_stream_listener_stops_once(self):
        self.add_stream("tcp")
        self.add_stream("tls")
        self.add_datagram("udp")
        self.service.startService()
        d = self.service.stopService()
        self.alice.gone()
        self.bob.gone()
        self.successResultOf(d)
        self.assertEqual(
            self.journal,
            [
                "stop tls",
                "stop tcp",
                "close alice: server shutting down",
                "close bob: server shutting down",
                "stop udp",
            ],
        )

    def test_goodbye_count_is_logged_when_the_goodbyes_start(self):
        tcp = self.add_stream("tcp", hold=True)
        self.service.startService()
        with capturedLogs() as events:
            self.service.stopService()
            self.assertEqual(events, [])
            tcp.stopping.callback(None)
        [event] = [e for e in events if "goodbye" in e["log_format"]]
        self.assertEqual(event["count"], 2)
        self.assertEqual(event["log_level"], LogLevel.info)

    def test_a_listener_that_fails_to_stop_does_not_stop_the_shutdown(self):
        class Broken(Service):
            def stopService(self):
                super().stopService()
                raise RuntimeError("cannot stop")

        self.service.add_stream_listener(Broken())
        udp = self.add_datagram("udp")
        self.service.startService()
        d = self.service.stopService()
        self.alice.gone()
        self.bob.gone()
        self.successResultOf(d)
        self.assertFalse(udp.running)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_stopped_listener_is_not_stopped_again(self):
        tcp = self.add_stream("tcp")
        self.service.startService()
        tcp.stopService()
        self.journal.clear()
        d = self.service.stopService()
        self.alice.gone()
        self.bob.gone()
        self.successResultOf(d)
        self.assertNotIn("stop tcp", self.journal)


@implementer(IHistoryStore)
class KeepingStore:
    """A history store that keeps what it is given, and has nothing to replay."""

    def __init__(self):
        self.recorded = []

    def record_turn(self, events):
        self.recorded.extend(events)

    def recent(self, room, limit, before, after=None):
        return defer.succeed([])

    def newest_id(self):
        return defer.succeed(0)


class HistoryChild(Service):
    """Stands for the history service: on stop it notes who it has recorded leaving."""

    def __init__(self, store, journal):
        self.setName("history")
        self._store = store
        self._journal = journal

    def stopService(self):
        super().stopService()
        left = [e.nick for e in self._store.recorded if isinstance(e, Left)]
        self._journal.append(f"stop history; recorded leaving: {', '.join(left)}")


class HistoryStopTests(_StopHarness):
    """
    The history store is a child like any other, added first (as makeService
    does): it stops after the goodbyes, so the leaves of the shutdown are in it.
    """

    def make_hub(self):
        self.store = KeepingStore()
        self.assertTrue(verifyObject(IHistoryStore, self.store))
        return Hub(self.clock, history=self.store)

    def test_history_stops_after_the_goodbyes_with_their_leaves(self):
        HistoryChild(self.store, self.journal).setServiceParent(self.service)
        self.service.add_stream_listener(NotingService("tcp", self.journal))
        self.service.add_datagram_listener(NotingService("udp", self.journal))
        self.service.startService()
        d = self.service.stopService()
        self.alice.gone()
        self.assertNotIn("stop history", " ".join(self.journal))
        self.bob.gone()
        self.successResultOf(d)
        self.assertEqual(
            self.journal,
            [
                "stop tcp",
                "close alice: server shutting down",
                "close bob: server shutting down",
                "stop udp",
                "stop history; recorded leaving: alice, bob",
            ],
        )
        [left_alice, left_bob] = [e for e in self.store.recorded if isinstance(e, Left)]
        self.assertEqual(
            (left_alice.rooms, left_alice.reason), (("#lobby",), "server shutting down")
        )
        self.assertLess(left_alice.id, left_bob.id)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_history_stops_after_the_grace_runs_out(self):
        HistoryChild(self.store, self.journal).setServiceParent(self.service)
        self.service.startService()
        d = self.service.stopService()
        self.clock.advance(1.9)
        self.assertNotIn("stop history", " ".join(self.journal))
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertEqual(self.journal[-1], "stop history; recorded leaving: alice, bob")


class CannotListenTests(SynchronousTestCase):
    """
    A port that cannot be had ends the process with status 1 when the service
    is told to (the listener has logged why, in one line); else it is raised.
    """

    def service(self, exit_if_cannot_listen, during, pidfile=""):
        clock = Clock()
        service = ChatService(
            Hub(clock), NickRegistry(), Admission(10, 10), clock,
            owns_process=True, exit_if_cannot_listen=exit_if_cannot_listen, pidfile=pidfile,
        )
        service.add_stream_listener(CannotListenService(during))
        return service

    def test_privileged_start_exits_1(self):
        service = self.service(True, "privilegedStartService")
        with self.assertRaises(SystemExit) as raised:
            service.privilegedStartService()
        self.assertEqual(raised.exception.code, 1)

    def test_start_exits_1(self):
        service = self.service(True, "startService")
        with self.assertRaises(SystemExit) as raised:
            service.startService()
        self.assertEqual(raised.exception.code, 1)

    def pidfile(self, pid):
        directory = tempfile.mkdtemp(prefix="chatroom-pid-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "twistd.pid")
        with open(path, "w") as f:
            f.write(str(pid))
        return path

    def test_exit_removes_our_pidfile(self):
        """twistd removes it on failures it sees; it does not see an exit."""
        path = self.pidfile(os.getpid())
        service = self.service(True, "privilegedStartService", pidfile=path)
        self.assertRaises(SystemExit, service.privilegedStartService)
        self.assertFalse(os.path.exists(path))

    def test_exit_leaves_another_process_pidfile(self):
        path = self.pidfile(os.getpid() + 1)
        service = self.service(True, "startService", pidfile=path)
        self.assertRaises(SystemExit, service.startService)
        self.assertTrue(os.path.exists(path))

    def test_exit_without_a_pidfile(self):
        path = self.pidfile(os.getpid())
        os.remove(path)
        service = self.service(True, "startService", pidfile=path)
        self.assertRaises(SystemExit, service.startService)

    def test_raised_otherwise(self):
        """Tests, and twistd's daemon mode, whose waiting parent learns only of exceptions."""
        for during in ("privilegedStartService", "startService"):
            service = self.service(False, during)
            self.assertRaises(CannotListenError, getattr(service, during))

    def test_other_errors_are_not_hidden(self):
        class Broken(Service):
            def privilegedStartService(self):
                raise RuntimeError("a bug")

        clock = Clock()
        service = ChatService(
            Hub(clock), NickRegistry(), Admission(10, 10), clock,
            owns_process=True, exit_if_cannot_listen=True,
        )
        service.add_stream_listener(Broken())
        self.assertRaises(RuntimeError, service.privilegedStartService)


class LogObserverTests(SynchronousTestCase):
    """The observer from L{chatservice.logs} reaches twistd through the Application."""

    def service(self, observer):
        clock = Clock()
        return ChatService(
            Hub(clock), NickRegistry(), Admission(10, 10), clock, log_observer=observer
        )

    def test_set_on_the_application(self):
        observer = [].append
        application = Application("chatroom")
        service = self.service(observer)
        service.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), observer)
        self.assertEqual(list(IService(application)), [service])

    def test_none_leaves_the_application_alone(self):
        application = Application("chatroom")
        self.service(None).setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))

    def test_any_other_parent_is_just_a_parent(self):
        parent = MultiService()
        service = self.service([].append)
        service.setServiceParent(parent)
        self.assertEqual(list(parent), [service])


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
            Hub(self.reactor), NickRegistry(), Admission(10, 10), self.reactor,
            **kwargs,
        )

    def test_takes_signals_once_the_reactor_runs(self):
        before = signal.getsignal(signal.SIGTERM)
        service = self.service(owns_process=True)
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
