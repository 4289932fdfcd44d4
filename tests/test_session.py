"""
Tests for L{chatservice.core.session}: choosing a nick, the commands, endings, the login timer, flood
control, internal errors, and a registry that answers later.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.commands import HELP_LINES
from chatservice.core.flood import FloodPolicy
from chatservice.core.limits import Limits
from chatservice.core.nicks import NickRegistry
from chatservice.core.room import Room
from chatservice.core.session import Session
from tests.fakes import (
    BrokenRegistry,
    DeferredRegistry,
    FakeParticipant,
    RegistryError,
    ViaFailsParticipant,
)

GREETING = "* welcome to chatroom, what is your nickname?"
ASK_AGAIN = "* what is your nickname?"
HELP_HINT = "* type /help for commands"


class SessionTestMixin:
    """A room, a registry and a clock, and helpers to connect people."""

    limits = Limits()

    def setUp(self):
        self.clock = Clock()
        self.registry = NickRegistry()
        self.room = Room(self.clock)
        self.participants = []

    def connect(self, via="tcp", kind=FakeParticipant, registry=None):
        """Start a session and deliver its greeting; return (session, participant)."""
        participant = kind(None, via)
        session = Session(
            participant, self.room, registry or self.registry, self.clock, self.limits
        )
        session.start()
        self.clock.advance(0)
        self.participants.append(participant)
        return session, participant

    def join(self, nick, via="tcp", kind=FakeParticipant, registry=None):
        """Connect and join as C{nick}, then forget everything delivered so far."""
        session, participant = self.connect(via, kind, registry)
        session.handle(nick)
        if isinstance(registry, DeferredRegistry):
            registry.answer()
        self.clock.advance(0)
        self.assertTrue(session.joined)
        for each in self.participants:
            each.clear()
        return session, participant


class LoginTests(SessionTestMixin, SynchronousTestCase):
    """A new session greets, takes the first line as the nick, and welcomes."""

    def test_greeting(self):
        """The first thing a user reads asks for a nickname."""
        session, alice = self.connect()
        self.assertEqual(alice.lines(), [GREETING])
        self.assertFalse(session.joined)

    def test_first_line_is_nick(self):
        """The first line is taken as the nick and the user is welcomed."""
        session, alice = self.connect()
        alice.clear()
        session.handle("alice")
        self.clock.advance(0)
        self.assertEqual(alice.lines(), ["* you are alice; 1 online: alice", HELP_HINT])
        self.assertTrue(session.joined)
        self.assertEqual(alice.nick, "alice")
        self.assertIs(self.registry.holder("alice"), session)

    def test_nick_command_accepted(self):
        """'/nick NAME' chooses the nick too."""
        session, alice = self.connect()
        alice.clear()
        session.handle("/nick alice")
        self.clock.advance(0)
        self.assertEqual(alice.lines(), ["* you are alice; 1 online: alice", HELP_HINT])
        self.assertEqual(alice.nick, "alice")

    def test_welcome_lists_everyone(self):
        """The welcome names everyone online; the others see the join."""
        _, alice = self.join("alice")
        session, bob = self.connect("udp")
        bob.clear()
        session.handle("bob")
        self.clock.advance(0)
        self.assertEqual(bob.lines(), ["* you are bob; 2 online: alice, bob", HELP_HINT])
        self.assertEqual(alice.lines(), ["* bob joined"])

    def test_invalid_nick_asks_again(self):
        """An invalid nick is refused with a '!' line and the question again."""
        session, alice = self.connect()
        alice.clear()
        session.handle("1alice")
        self.clock.advance(0)
        self.assertEqual(
            alice.lines(),
            ["! invalid nickname 1alice: it must not start with a digit or '-'", ASK_AGAIN],
        )
        self.assertFalse(session.joined)
        self.assertEqual(len(self.registry), 0)

    def test_taken_nick_asks_again(self):
        """A nick somebody holds (in any case) is refused and asked again."""
        self.join("alice")
        session, other = self.connect()
        other.clear()
        session.handle("ALICE")
        self.clock.advance(0)
        self.assertEqual(other.lines(), ["! nickname ALICE is taken, try another", ASK_AGAIN])
        self.assertFalse(session.joined)

    def test_second_try_after_refusal(self):
        """After a refusal the next line is the next try."""
        session, alice = self.connect()
        session.handle("-alice")
        self.clock.advance(0)
        alice.clear()
        session.handle("alice")
        self.clock.advance(0)
        self.assertEqual(alice.lines(), ["* you are alice; 1 online: alice", HELP_HINT])

    def test_refusal_and_nick_in_one_turn(self):
        """Two lines pasted at once, a bad nick then a good one: both answers arrive, in order."""
        session, alice = self.connect()
        alice.clear()
        session.handle("1alice")
        session.handle("alice")
        self.clock.advance(0)
        self.assertEqual(
            alice.lines(),
            [
                "! invalid nickname 1alice: it must not start with a digit or '-'",
                ASK_AGAIN,
                "* you are alice; 1 online: alice",
                HELP_HINT,
            ],
        )


class JoinedTests(SessionTestMixin, SynchronousTestCase):
    """What joined users can do, and what the others see of it."""

    def setUp(self):
        super().setUp()
        self.alice_session, self.alice = self.join("alice")
        self.bob_session, self.bob = self.join("bob", "udp")

    def test_line_goes_to_others(self):
        """A plain line is seen by the others, not echoed to its sender."""
        self.alice_session.handle("hello there")
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), ["alice: hello there"])
        self.assertEqual(self.alice.lines(), [])

    def test_empty_lines_ignored(self):
        """Empty and blank lines do nothing."""
        self.alice_session.handle("")
        self.alice_session.handle("   ")
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), [])
        self.assertEqual(self.alice.lines(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_controls_scrubbed(self):
        """Escape sequences never reach the others."""
        self.alice_session.handle("\x1b[2J\x1b[31mred\x07")
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), ["alice: red"])

    def test_who(self):
        """/who lists everyone with their transport."""
        self.alice_session.handle("/who")
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), ["* 2 online: alice (tcp), bob (udp)"])
        self.assertEqual(self.bob.lines(), [])

    def test_help(self):
        """/help lists the commands to the asker only."""
        self.alice_session.handle("/help")
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), ["* " + line for line in HELP_LINES])
        self.assertEqual(self.bob.lines(), [])

    def test_msg(self):
        """/msg reaches only the named user; the sender is shown what it sent, and to whom."""
        _, carol = self.join("carol")
        self.alice_session.handle("/msg Bob psst, a secret")
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), ["[private] alice: psst, a secret"])
        self.assertEqual(carol.lines(), [])
        self.assertEqual(self.alice.lines(), ["-> bob: psst, a secret"])

    def test_msg_kelvin_sign_is_not_k(self):
        """Nicks fold A-Z only: KELVIN SIGN (U+212A) does not reach 'kate'."""
        _, kate = self.join("kate")
        self.alice_session.handle("/msg \u212aate psst")
        self.alice_session.handle("/msg KATE hello")
        self.clock.advance(0)
        self.assertEqual(kate.lines(), ["[private] alice: hello"])
        self.assertEqual(
            self.alice.lines(), ["! no such user: \u212aate", "-> kate: hello"]
        )

    def test_msg_to_nobody(self):
        """/msg to an unknown nick is refused."""
        self.alice_session.handle("/msg zed hi")
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), ["! no such user: zed"])
        self.assertEqual(self.bob.lines(), [])

    def test_bad_command_refused(self):
        """An unknown command is refused to its sender only."""
        self.alice_session.handle("/dance")
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), ["! unknown command: /dance (try /help)"])
        self.assertEqual(self.bob.lines(), [])

    def test_me(self):
        """/me is shown to the others as an action."""
        self.alice_session.handle("/me waves")
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), ["* alice waves"])

    def test_nick_renames_for_everyone(self):
        """/nick renames: everyone sees it, the registry moves, later lines use the new name."""
        self.alice_session.handle("/nick alicia")
        self.alice_session.handle("hi again")
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), ["* alice is now known as alicia"])
        self.assertEqual(self.bob.lines(), ["* alice is now known as alicia", "alicia: hi again"])
        self.assertEqual(self.alice.nick, "alicia")
        self.assertIs(self.registry.holder("alicia"), self.alice_session)
        self.assertIsNone(self.registry.holder("alice"))
        self.assertIs(self.room.find("alicia"), self.alice)

    def test_nick_to_taken_refused(self):
        """/nick to a taken nick is refused and nothing changes."""
        self.alice_session.handle("/nick BOB")
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), ["! nickname BOB is taken, try another"])
        self.assertEqual(self.bob.lines(), [])
        self.assertEqual(self.alice.nick, "alice")
        self.assertIs(self.registry.holder("alice"), self.alice_session)
        self.assertIs(self.registry.holder("bob"), self.bob_session)

    def test_quit(self):
        """/quit: the others see 'quit', the user is closed with 'goodbye', the nick is free."""
        self.alice_session.handle("/quit")
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), ["* alice left (quit)"])
        self.assertEqual(self.alice.closed, ["goodbye"])
        self.assertTrue(self.alice_session.gone)
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(self.room.connected, 1)

    def test_quit_with_reason(self):
        """/quit reason shows the reason."""
        self.alice_session.handle("/quit gone fishing")
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), ["* alice left (gone fishing)"])
        self.assertEqual(self.alice.closed, ["goodbye"])

    def test_connection_lost(self):
        """A lost connection is a leave with 'connection lost'; the nick is free at once."""
        self.alice_session.connection_lost()
        self.assertIsNone(self.registry.holder("alice"))
        session, newcomer = self.connect()
        session.handle("Alice")
        self.assertTrue(session.joined)
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), ["* alice left (connection lost)", "* Alice joined"])
        self.assertEqual(self.alice.closed, [])

    def test_lines_after_end_ignored(self):
        """A gone session ignores further lines."""
        self.alice_session.handle("/quit")
        self.alice_session.handle("still here?")
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), ["* alice left (quit)"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LoginTimeoutTests(SessionTestMixin, SynchronousTestCase):
    """A session that chooses no nick in time is closed; joining stops the timer."""

    limits = Limits(login_timeout=30.0)

    def test_closed_after_timeout(self):
        """An unjoined session is closed with a notice after login_timeout, no timer left."""
        session, alice = self.connect()
        self.clock.advance(29.5)
        self.assertEqual(alice.closed, [])
        self.clock.advance(0.5)
        self.assertEqual(alice.closed, ["no nickname chosen within 30 seconds"])
        self.assertTrue(session.gone)
        self.assertEqual(self.room.connected, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_joining_cancels_timer(self):
        """Once joined, no timer is left and the timeout never closes the session."""
        session, alice = self.join("alice")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(alice.closed, [])
        self.assertTrue(session.joined)

    def test_quit_cancels_timer(self):
        """A session that quits before joining leaves no timer."""
        session, alice = self.connect()
        session.handle("/quit")
        self.clock.advance(0)
        self.assertEqual(alice.closed, ["goodbye"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


SLOWED = "* slow down: you may send {rate} lines per second; your next lines are held back and sent at that rate"


class FloodTests(SessionTestMixin, SynchronousTestCase):
    """Lines over the rate are held back and relayed at the sustained rate, in order, none lost."""

    limits = Limits(flood=FloodPolicy(rate=0.5, burst=2))

    def setUp(self):
        super().setUp()
        self.alice_session, self.alice = self.join("alice")  # spends one token
        self.bob_session, self.bob = self.join("bob")

    def test_held_then_relayed_at_the_rate(self):
        """Over the limit: one notice, input paused, and every line relayed in order at the rate."""
        for line in ["one", "two", "three"]:
            self.alice_session.handle(line)
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), [SLOWED.format(rate="0.5")])
        self.assertEqual(self.bob.lines(), ["alice: one"])
        self.assertTrue(self.alice.paused)
        self.assertEqual(self.alice_session.held, 2)
        self.clock.advance(2)
        self.assertEqual(self.bob.lines(), ["alice: one", "alice: two"])
        self.assertTrue(self.alice.paused)
        self.clock.advance(2)
        self.assertEqual(self.bob.lines(), ["alice: one", "alice: two", "alice: three"])
        self.assertFalse(self.alice.paused)
        self.assertEqual(self.alice.lines(), [SLOWED.format(rate="0.5")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_notice_per_interval(self):
        """Being slowed again soon after says nothing new; ten seconds later it says it again."""
        for line in ["one", "two"]:
            self.alice_session.handle(line)
        self.clock.advance(2)
        self.alice_session.handle("three")
        self.clock.advance(2)
        self.assertEqual(self.alice.lines(), [SLOWED.format(rate="0.5")])
        self.clock.advance(10)
        for line in ["four", "five", "six"]:
            self.alice_session.handle(line)
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), [SLOWED.format(rate="0.5")] * 2)
        self.clock.advance(10)
        self.assertEqual(
            self.bob.lines(), [f"alice: {n}" for n in ["one", "two", "three", "four", "five", "six"]]
        )

    def test_quit_waits_its_turn_and_end_cancels_the_timer(self):
        """A held /quit is applied in order; a session ended while lines wait leaves no timer."""
        for line in ["one", "two", "/quit bye"]:
            self.alice_session.handle(line)
        self.clock.advance(0)
        self.bob_session.connection_lost()
        self.clock.advance(4)
        self.assertEqual(self.alice.closed, ["goodbye"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PasteTests(SessionTestMixin, SynchronousTestCase):
    """The default limits: a 30-line paste arrives whole, the excess at 10 lines a second."""

    def test_thirty_line_paste(self):
        """Lines 1-20 at once, 21-30 within the next second, in order; one notice."""
        alice_session, alice = self.join("alice")
        _, bob = self.join("bob")
        self.clock.advance(60)  # a full bucket again after joining
        for number in range(1, 31):
            alice_session.handle(f"line {number}")
        self.clock.advance(0)
        self.assertEqual(bob.lines(), [f"alice: line {n}" for n in range(1, 21)])
        self.clock.pump([0.1] * 10)
        self.assertEqual(bob.lines(), [f"alice: line {n}" for n in range(1, 31)])
        self.assertEqual(alice.lines(), [SLOWED.format(rate="10")])
        self.assertFalse(alice.paused)


class HeldBoundTests(SessionTestMixin, SynchronousTestCase):
    """A sender that cannot be paused (UDP) has at most C{queue} lines held; more are refused."""

    limits = Limits(flood=FloodPolicy(rate=1, burst=1, queue=3))

    def test_refused_beyond_the_bound(self):
        """Ten lines at once: one goes, three wait, six are refused with one '! ' line a second."""
        alice_session, alice = self.join("alice")
        _, bob = self.join("bob")
        self.clock.advance(1)
        for number in range(10):
            alice_session.handle(f"n{number}")
        self.clock.advance(0)
        self.assertEqual(
            alice.lines(),
            [
                SLOWED.format(rate="1"),
                "! slow down: 3 of your lines are already waiting; line dropped",
            ],
        )
        self.assertEqual(alice_session.held, 3)
        self.clock.pump([1, 1, 1])
        self.assertEqual(bob.lines(), [f"alice: n{number}" for number in range(4)])
        self.assertEqual(alice_session.held, 0)


class KickTests(SessionTestMixin, SynchronousTestCase):
    """Lines arriving at more than 5x the rate for 10 seconds end the session."""

    limits = Limits(flood=FloodPolicy(rate=1, burst=1))

    def test_kicked(self):
        """Eight lines a second: kicked at t=10, the others see '(flooding)', the nick is free."""
        alice_session, alice = self.join("alice")
        _, bob = self.join("bob")
        step = 0
        while not alice_session.gone and step < 200:
            alice_session.handle(f"spam {step}")
            step += 1
            if not alice_session.gone:
                self.clock.advance(0.125)
        self.assertEqual(self.clock.seconds(), 10.0)
        self.clock.advance(0)
        self.assertEqual(alice.closed, ["disconnected for flooding"])
        self.assertEqual(bob.lines()[-1], "* alice left (flooding)")
        # The nick spent the one token; after that the held lines went one a second, in order.
        relayed = bob.lines()[:-1]
        self.assertEqual(relayed, [f"alice: spam {n}" for n in range(len(relayed))])
        self.assertIn(len(relayed), (9, 10))
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class InternalErrorTests(SessionTestMixin, SynchronousTestCase):
    """An unexpected error ends only the session it happened in, and is logged."""

    def test_participant_error(self):
        """A participant that raises mid-command is logged and ended; the others chat on."""
        alice_session, alice = self.join("alice", kind=ViaFailsParticipant)
        bob_session, bob = self.join("bob")
        _, carol = self.join("carol")
        alice.broken = True
        alice_session.handle("/who")
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(alice_session.gone)
        self.assertEqual(alice.closed, ["internal error, disconnecting"])
        self.assertIsNone(self.registry.holder("alice"))
        bob_session.handle("still here")
        self.clock.advance(0)
        self.assertEqual(carol.lines(), ["* alice left (internal error)", "bob: still here"])

    def test_registry_error_on_reserve(self):
        """A registry that raises on reserve is logged and that session ends."""
        registry = BrokenRegistry({"reserve"})
        session, alice = self.connect(registry=registry)
        _, bob = self.join("bob")
        session.handle("alice")
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(RegistryError)), 1)
        self.assertTrue(session.gone)
        self.assertEqual(alice.closed, ["internal error, disconnecting"])
        self.assertEqual(bob.lines(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_registry_error_on_rename(self):
        """A registry that raises on rename is logged; that user leaves with 'internal error'."""
        registry = BrokenRegistry({"rename"})
        alice_session, alice = self.join("alice", registry=registry)
        bob_session, bob = self.join("bob", registry=registry)
        alice_session.handle("/nick alicia")
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(RegistryError)), 1)
        self.assertTrue(alice_session.gone)
        self.assertEqual(alice.closed, ["internal error, disconnecting"])
        self.assertEqual(bob.lines(), ["* alice left (internal error)"])
        self.assertIsNone(registry.real.holder("alice"))
        self.assertTrue(bob_session.joined)


class SlowRegistryTests(SessionTestMixin, SynchronousTestCase):
    """While the registry has not answered, lines wait and are applied in order afterwards."""

    def setUp(self):
        super().setUp()
        self.slow = DeferredRegistry()
        self.bob_session, self.bob = self.join("bob", registry=self.slow)

    def test_lines_wait_for_answer(self):
        """Lines sent while reserve() is pending are applied in order once it answers."""
        session, alice = self.connect(registry=self.slow)
        session.handle("alice")
        session.handle("hello")
        session.handle("/me waves")
        self.clock.advance(0)
        self.assertFalse(session.joined)
        self.assertEqual(self.bob.lines(), [])
        self.slow.answer()
        self.clock.advance(0)
        self.assertTrue(session.joined)
        self.assertEqual(self.bob.lines(), ["* alice joined", "alice: hello", "* alice waves"])

    def test_refusal_then_queued_try(self):
        """A late refusal is shown, then the queued line is the next try."""
        session, alice = self.connect(registry=self.slow)
        alice.clear()
        session.handle("Bob")
        session.handle("alice")
        self.slow.answer()
        self.clock.advance(0)
        self.assertEqual(len(self.slow.waiting), 1)
        self.slow.answer()
        self.clock.advance(0)
        self.assertEqual(
            alice.lines(),
            [
                "! nickname Bob is taken, try another",
                ASK_AGAIN,
                "* you are alice; 2 online: bob, alice",
                HELP_HINT,
            ],
        )

    def test_gone_before_answer(self):
        """A user gone before the answer never joins, and the nick is given back."""
        session, alice = self.connect(registry=self.slow)
        session.handle("alice")
        session.connection_lost()
        self.slow.answer()
        self.clock.advance(0)
        self.assertTrue(session.gone)
        self.assertIsNone(self.slow.real.holder("alice"))
        self.assertEqual(self.bob.lines(), [])
        self.assertEqual(len(self.room), 1)
