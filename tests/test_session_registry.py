"""
Tests for L{chatservice.core.session} against registries that fail or never answer: every registry
answer is handled, and a registry that does not answer within L{REGISTRY_TIMEOUT} ends only the
session that waits on it, cleanly.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatservice.core.events import Refusal
from chatservice.core.interfaces import INickRegistry
from chatservice.core.limits import Limits
from chatservice.core.nicks import NickRegistry
from chatservice.core.hub import Hub
from chatservice.core.session import REGISTRY_TIMEOUT, Session
from tests.fakes import FakeParticipant, RegistryError

TIMED_OUT = "the server could not check nicknames in time; please try again later"


@implementer(INickRegistry)
class FailingReleaseRegistry:
    """A working registry whose C{release} fails with an unexpected error, as a Deferred."""

    def __init__(self) -> None:
        self.real = NickRegistry()

    def reserve(self, nick, owner):
        return self.real.reserve(nick, owner)

    def rename(self, old, new, owner):
        return self.real.rename(old, new, owner)

    def release(self, nick, owner):
        return defer.fail(RegistryError("release exploded"))


@implementer(INickRegistry)
class SilentRegistry:
    """A registry that never answers the operations named in C{silent}; the rest work."""

    def __init__(self, silent: set[str]) -> None:
        self.real = NickRegistry()
        self.silent = silent
        self.pending: list[tuple[str, defer.Deferred]] = []
        self.released: list[str] = []

    def _never(self, operation) -> defer.Deferred:
        d = defer.Deferred()
        self.pending.append((operation, d))
        return d

    def reserve(self, nick, owner):
        if "reserve" in self.silent:
            return self._never("reserve")
        return self.real.reserve(nick, owner)

    def rename(self, old, new, owner):
        if "rename" in self.silent:
            return self._never("rename")
        return self.real.rename(old, new, owner)

    def release(self, nick, owner):
        self.released.append(nick)
        if "release" in self.silent:
            return self._never("release")
        return self.real.release(nick, owner)


class RegistryAnswerTests(SynchronousTestCase):
    """Registries that fail or stay silent never leave a session hanging or a failure unhandled."""

    def setUp(self):
        self.clock = Clock()
        self.hub = Hub(self.clock)

    def connect(self, registry):
        participant = FakeParticipant()
        session = Session(participant, self.hub, registry, self.clock, Limits())
        session.start()
        self.clock.advance(0)
        participant.clear()
        return session, participant

    def test_fakes_are_registries(self):
        self.assertTrue(verifyObject(INickRegistry, FailingReleaseRegistry()))
        self.assertTrue(verifyObject(INickRegistry, SilentRegistry(set())))

    def test_release_failure_on_quit_is_logged(self):
        """A release that fails when the user quits is logged once; the session still ends."""
        registry = FailingReleaseRegistry()
        session, alice = self.connect(registry)
        session.handle("alice")
        with capturedLogs() as events:
            session.handle("/quit")
        self.clock.advance(0)
        [logged] = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual((logged["log_format"], logged["nick"]), ("Releasing {nick} failed", "alice"))
        self.assertTrue(session.gone)
        self.assertEqual(alice.closed, ["goodbye"])
        self.assertEqual(len(self.flushLoggedErrors(RegistryError)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_release_failure_after_late_reserve_is_logged(self):
        """A user gone before its reserve answered: the nick is given back, and that failure logged."""
        registry = SilentRegistry({"reserve"})
        registry.release = FailingReleaseRegistry().release
        session, alice = self.connect(registry)
        session.handle("alice")
        session.connection_lost()
        [(_, reserve)] = registry.pending
        with capturedLogs() as events:
            reserve.callback("alice")
        self.assertEqual(len(self.flushLoggedErrors(RegistryError)), 1)
        [logged] = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual((logged["log_format"], logged["nick"]), ("Releasing {nick} failed", "alice"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reserve_never_answers(self):
        """No answer to reserve within the bound: the user is told, the session ends, nothing waits."""
        registry = SilentRegistry({"reserve"})
        session, alice = self.connect(registry)
        session.handle("alice")
        session.handle("hello?")
        self.assertTrue(alice.paused)
        self.clock.advance(REGISTRY_TIMEOUT - 0.5)
        self.assertFalse(session.gone)
        with capturedLogs() as events:
            self.clock.advance(0.5)
        self.assertTrue(session.gone)
        # Before joining the user has no nick: the log names where it connects from.
        [warning] = [e for e in events if "did not answer" in e["log_format"]]
        self.assertEqual((warning["nick"], warning["peer"]), (None, "192.0.2.1:50000"))
        self.assertEqual(alice.closed, [TIMED_OUT])
        self.assertEqual(registry.released, ["alice"])  # in case it is granted after all
        self.assertEqual(self.hub.connected, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_rename_never_answers(self):
        """No answer to rename: the user is told and leaves; the others see it; both nicks released."""
        registry = SilentRegistry({"rename"})
        session, alice = self.connect(registry)
        session.handle("alice")
        bob_session, bob = self.connect(registry)
        bob_session.handle("bob")
        self.clock.advance(0)
        bob.clear()
        session.handle("/nick alicia")
        self.clock.advance(REGISTRY_TIMEOUT)
        self.assertTrue(session.gone)
        self.assertEqual(alice.closed, [TIMED_OUT])
        self.assertEqual(bob.lines(), ["* alice left (server error)"])
        self.assertEqual(sorted(registry.released), ["alice", "alicia"])
        self.assertTrue(bob_session.joined)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_release_never_answers(self):
        """A release that never answers is given up after the bound and logged; nothing waits."""
        registry = SilentRegistry({"release"})
        session, alice = self.connect(registry)
        session.handle("alice")
        session.connection_lost()
        self.assertEqual(registry.released, ["alice"])
        self.clock.advance(REGISTRY_TIMEOUT)
        self.assertEqual(len(self.flushLoggedErrors(defer.TimeoutError)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_late_answer_after_timeout_is_ignored(self):
        """A registry answering after the session gave up changes nothing and raises nothing."""
        registry = SilentRegistry({"reserve"})
        session, alice = self.connect(registry)
        session.handle("alice")
        self.clock.advance(REGISTRY_TIMEOUT)
        [(_, reserve)] = registry.pending
        reserve.callback("alice")
        self.assertTrue(session.gone)
        self.assertEqual(len(self.hub.default_room), 0)
        self.assertIsNone(self.hub.find("alice"))
        self.assertEqual(self.hub.connected, 0)
        self.assertEqual(alice.closed, [TIMED_OUT])


class NickPromptTests(SynchronousTestCase):
    """An empty line at the nickname prompt is answered, not ignored."""

    def test_empty_line_gets_refusal_and_prompt(self):
        clock = Clock()
        hub = Hub(clock)
        alice = FakeParticipant()
        session = Session(alice, hub, NickRegistry(), clock, Limits())
        session.start()
        clock.advance(0)
        alice.clear()
        for blank in ["", "   "]:
            session.handle(blank)
        clock.advance(0)
        self.assertEqual(
            alice.lines(),
            ["! type a nickname: it cannot be empty", "* what is your nickname?"] * 2,
        )
        self.assertEqual(
            [event.kind for event in alice.events if isinstance(event, Refusal)],
            ["invalid-nick"] * 2,
        )
        self.assertFalse(session.joined)
