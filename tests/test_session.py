"""
Tests for L{chatservice.core.session}: choosing a nick, the commands, the current room and the room
commands, refusals and their kinds, history, endings, the login timer, flood control, internal
errors, and a registry that answers later.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatservice.core.commands import HELP_LINES
from chatservice.core.events import (
    PUBLIC_LINES,
    CurrentRoom,
    HelpText,
    HistoryEnd,
    HistoryStart,
    Notice,
    Refusal,
    Replayed,
    RoomJoined,
    RoomList,
    RoomParted,
    Said,
    TopicIs,
    Welcome,
    WhoList,
)
from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.interfaces import IHistoryStore
from chatservice.core.limits import Limits
from chatservice.core.names import fold
from chatservice.core.nicks import NickRegistry
from chatservice.core.session import NAMES_SHOWN, Session
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


def refusals(participant) -> list:
    """(kind, text) of every refusal delivered to C{participant} so far."""
    return [(event.kind, event.text) for event in participant.events if type(event) is Refusal]


class SessionTestMixin:
    """A hub, a registry and a clock, and helpers to connect people."""

    limits = Limits()
    history = None

    def setUp(self):
        self.clock = Clock()
        self.registry = NickRegistry()
        self.hub = Hub(self.clock, self.limits, history=self.history, replay=0)
        self.participants = []

    def connect(self, via="tcp", kind=FakeParticipant, registry=None):
        """Start a session and deliver its greeting; return (session, participant)."""
        participant = kind(None, via)
        session = Session(
            participant, self.hub, registry or self.registry, self.clock, self.limits
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

    def send(self, session, *lines):
        """C{session}'s user types C{lines}; the turn ends."""
        for line in lines:
            session.handle(line)
        self.clock.advance(0)


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
        self.assertEqual(alice.lines(), ["* you are alice; 1 in #lobby: alice", HELP_HINT])
        self.assertTrue(session.joined)
        self.assertEqual(alice.nick, "alice")
        self.assertIs(self.registry.holder("alice"), session)

    def test_nick_command_accepted(self):
        """'/nick NAME' chooses the nick too."""
        session, alice = self.connect()
        alice.clear()
        session.handle("/nick alice")
        self.clock.advance(0)
        self.assertEqual(alice.lines(), ["* you are alice; 1 in #lobby: alice", HELP_HINT])
        self.assertEqual(alice.nick, "alice")

    def test_welcome_lists_everyone(self):
        """The welcome names everyone in the default room; the others see the join."""
        _, alice = self.join("alice")
        session, bob = self.connect("udp")
        bob.clear()
        session.handle("bob")
        self.clock.advance(0)
        self.assertEqual(bob.lines(), ["* you are bob; 2 in #lobby: alice, bob", HELP_HINT])
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
        self.assertEqual(alice.lines(), ["* you are alice; 1 in #lobby: alice", HELP_HINT])

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
                "* you are alice; 1 in #lobby: alice",
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
        """/who lists everyone in the current room with their transport, as one WhoList."""
        self.alice_session.handle("/who")
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), ["* 2 in #lobby: alice (tcp), bob (udp)"])
        self.assertEqual(self.alice.events, [WhoList("#lobby", (("alice", "tcp"), ("bob", "udp")))])
        self.assertEqual(self.bob.lines(), [])

    def test_help(self):
        """/help lists the commands to the asker only, as one HelpText value."""
        self.alice_session.handle("/help")
        self.clock.advance(0)
        self.assertEqual(self.alice.events, [HelpText(HELP_LINES)])
        self.assertEqual(self.alice.lines(), ["* " + line for line in HELP_LINES])
        self.assertEqual(self.bob.lines(), [])

    def test_help_lists_every_command(self):
        """Every command the session applies is in the /help text."""
        self.send(self.alice_session, "/help")
        [help_text] = self.alice.events
        listed = [line.split()[0] for line in help_text.lines[1:]]
        for command in ["/join", "/part", "/rooms", "/who", "/topic", "/history", "/msg", "/me",
                        "/nick", "/quit", "/help", "//text"]:
            self.assertIn(command, listed)

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
        self.assertEqual(refusals(self.alice), [("no-such-user", "no such user: zed")])
        self.assertEqual(self.bob.lines(), [])

    def test_bad_command_refused(self):
        """An unknown command is refused to its sender only."""
        self.alice_session.handle("/dance")
        self.clock.advance(0)
        self.assertEqual(self.alice.lines(), ["! unknown command: /dance (try /help)"])
        self.assertEqual(refusals(self.alice),
                         [("unknown-command", "unknown command: /dance (try /help)")])
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
        self.assertIs(self.hub.find("alicia"), self.alice)
        self.assertIsNone(self.hub.find("alice"))

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
        self.assertEqual(self.hub.connected, 1)
        self.assertNotIn(self.alice, self.hub.default_room.members)

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
        self.assertEqual(self.hub.connected, 0)
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
        self.assertEqual(
            refusals(alice),
            [("refused", "slow down: 3 of your lines are already waiting; line dropped")],
        )
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
                "* you are alice; 2 in #lobby: bob, alice",
                HELP_HINT,
            ],
        )
        self.assertEqual(refusals(alice), [("nick-in-use", "nickname Bob is taken, try another")])

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
        self.assertEqual(len(self.hub.default_room), 1)
        self.assertIsNone(self.hub.find("alice"))


class WelcomeTests(SessionTestMixin, SynchronousTestCase):
    """The welcome is a value: nick, default room, count and the first members."""

    def test_welcome_value(self):
        """Welcome then the /help hint, and the user's lines go to the default room."""
        self.join("alice")
        session, bob = self.connect("udp")
        bob.clear()
        self.send(session, "bob")
        self.assertEqual(
            bob.events,
            [Welcome("bob", "#lobby", 2, ("alice", "bob")), Notice("type /help for commands")],
        )
        self.assertEqual(bob.room, "#lobby")
        self.assertEqual(self.hub.rooms_of(bob), [self.hub.default_room])

    def test_welcome_names_the_first_few(self):
        """With more than NAMES_SHOWN here, the welcome names the first ones and counts all."""
        for number in range(NAMES_SHOWN + 4):
            self.join(f"user{number}")
        session, zed = self.connect()
        zed.clear()
        self.send(session, "zed")
        [welcome, _] = zed.events
        self.assertEqual(welcome.count, NAMES_SHOWN + 5)
        self.assertEqual(welcome.members, tuple(f"user{n}" for n in range(NAMES_SHOWN)))
        self.assertEqual(
            zed.lines()[0],
            "* you are zed; 25 in #lobby: " + ", ".join(welcome.members)
            + " and 5 more (/who lists all)",
        )

    def test_other_default_room(self):
        """A hub with another default room puts everyone there."""
        self.hub = Hub(self.clock, self.limits, default_room="#Main")
        session, alice = self.connect()
        alice.clear()
        self.send(session, "alice")
        self.assertEqual(alice.events[0], Welcome("alice", "#Main", 1, ("alice",)))
        self.assertEqual(alice.room, "#Main")

    def test_help_before_joining(self):
        """/help works at the nickname prompt; other commands are refused until a nick is chosen."""
        session, alice = self.connect()
        alice.clear()
        self.send(session, "/help", "/join #dev", "/who")
        self.assertEqual(alice.events[0], HelpText(HELP_LINES))
        self.assertEqual(
            refusals(alice), [("not-allowed", "choose a nickname first")] * 2
        )
        self.assertFalse(session.joined)
        self.assertIsNone(alice.room)


class CurrentRoomTests(SessionTestMixin, SynchronousTestCase):
    """On the line protocols plain lines and /me go to the current room; /join and /part move it."""

    def setUp(self):
        super().setUp()
        self.alice_session, self.alice = self.join("alice")
        self.bob_session, self.bob = self.join("bob")
        self.carol_session, self.carol = self.join("carol")
        self.send(self.carol_session, "/join #dev")
        self.carol.clear()

    def test_join_makes_current(self):
        """/join #room joins it and makes it current: lines and /me go there, not to #lobby."""
        self.send(self.alice_session, "/join #dev")
        self.assertEqual(self.alice.events, [RoomJoined("#dev", "", 2, ("carol", "alice"))])
        self.assertEqual(self.alice.lines(), ["* you joined #dev; 2 here: carol, alice"])
        self.assertEqual(self.alice.room, "#dev")
        self.assertEqual(self.carol.lines(), ["* alice joined"])
        self.assertEqual(self.bob.lines(), [])
        self.send(self.alice_session, "hi dev", "/me waves")
        self.assertEqual(self.carol.lines(), ["* alice joined", "alice: hi dev", "* alice waves"])
        self.assertEqual(self.bob.lines(), [])

    def test_join_shows_topic(self):
        """Joining a room with a topic shows it."""
        self.send(self.carol_session, "/topic ship it")
        self.send(self.alice_session, "/join #DEV")
        self.assertEqual(self.alice.lines(),
                         ["* you joined #dev; 2 here: carol, alice; topic: ship it"])
        self.assertEqual(self.alice.room, "#dev")

    def test_other_rooms_marked(self):
        """Lines from a room that is not the user's current room carry [#room]."""
        self.send(self.alice_session, "/join #dev")
        self.alice.clear()
        self.send(self.bob_session, "hello lobby", "/me yawns")
        self.send(self.carol_session, "hello dev")
        self.assertEqual(
            self.alice.lines(),
            ["[#lobby] bob: hello lobby", "[#lobby] * bob yawns", "carol: hello dev"],
        )

    def test_join_room_already_in(self):
        """/join of a room one is in only makes it current (any case): CurrentRoom, no Joined."""
        self.send(self.alice_session, "/join #dev")
        self.carol.clear()
        self.bob.clear()
        self.alice.clear()
        self.send(self.alice_session, "/join #LOBBY")
        self.assertEqual(self.alice.events, [CurrentRoom("#lobby")])
        self.assertEqual(self.alice.lines(), ["* your lines go to #lobby"])
        self.assertEqual(self.alice.room, "#lobby")
        self.assertEqual(self.bob.lines(), [])
        self.send(self.alice_session, "back here")
        self.assertEqual(self.bob.lines(), ["alice: back here"])
        self.assertEqual(self.carol.lines(), ["[#lobby] alice: back here"])

    def test_join_current_room(self):
        """/join of the current room says so and changes nothing."""
        self.send(self.alice_session, "/join #lobby")
        self.assertEqual(self.alice.events, [CurrentRoom("#lobby")])
        self.assertEqual(self.hub.rooms_of(self.alice), [self.hub.default_room])

    def test_part_current_moves_to_most_recently_joined(self):
        """/part of the current room: lines go to the most recently joined room left."""
        self.send(self.alice_session, "/join #dev", "/join #ops", "/join #dev")
        self.assertEqual(self.alice.room, "#dev")
        self.alice.clear()
        self.carol.clear()
        self.send(self.alice_session, "/part")
        self.assertEqual(self.alice.events, [RoomParted("#dev", "#ops")])
        self.assertEqual(self.alice.lines(), ["* you left #dev; your lines go to #ops"])
        self.assertEqual(self.alice.room, "#ops")
        self.assertEqual(self.carol.lines(), ["* alice left the room"])
        self.assertEqual([room.name for room in self.hub.rooms_of(self.alice)], ["#lobby", "#ops"])

    def test_part_with_reason(self):
        """/part [#room] reason: the room's members see the reason."""
        self.send(self.alice_session, "/join #dev")
        self.send(self.alice_session, "/part off to lunch")
        self.assertEqual(self.carol.lines(),
                         ["* alice joined", "* alice left the room (off to lunch)"])
        self.send(self.bob_session, "/join #dev", "/part #dev  see  you ")
        self.assertEqual(self.carol.lines()[-2:],
                         ["* bob joined", "* bob left the room (see  you)"])
        self.assertEqual(self.bob.room, "#lobby")

    def test_part_other_keeps_current(self):
        """/part #other leaves that room; the current room stays."""
        self.send(self.alice_session, "/join #dev")
        self.alice.clear()
        self.bob.clear()
        self.send(self.alice_session, "/part #lobby bye lobby")
        self.assertEqual(self.alice.events, [RoomParted("#lobby", "#dev")])
        self.assertEqual(self.alice.room, "#dev")
        self.assertEqual(self.bob.lines(), ["* alice left the room (bye lobby)"])
        self.send(self.alice_session, "still in dev")
        self.assertEqual(self.carol.lines()[-1], "alice: still in dev")
        self.assertEqual(self.bob.lines(), ["* alice left the room (bye lobby)"])

    def test_part_last_room(self):
        """/part of the last room leaves no current room: lines and room commands are refused."""
        self.send(self.alice_session, "/part")
        self.assertEqual(self.alice.events, [RoomParted("#lobby", None)])
        self.assertEqual(self.alice.lines(),
                         ["* you left #lobby; you are in no room now (/join #room)"])
        self.assertIsNone(self.alice.room)
        self.alice.clear()
        self.bob.clear()
        self.send(self.alice_session, "anyone?", "/me waves", "/part", "/who", "/topic",
                  "/topic new", "/history")
        self.assertEqual(
            refusals(self.alice), [("not-in-room", "you are in no room: /join #room first")] * 7
        )
        self.assertEqual(self.bob.lines(), [])
        self.assertTrue(self.alice_session.joined)

    def test_in_no_room_still_private_and_rejoin(self):
        """A user in no room can still /msg, /who #room, /rooms, and /join again."""
        self.send(self.alice_session, "/part")
        self.alice.clear()
        self.send(self.alice_session, "/msg bob psst", "/who #dev", "/join #lobby", "back")
        self.assertEqual(
            self.alice.lines(),
            ["-> bob: psst", "* 1 in #dev: carol (tcp)",
             "* you joined #lobby; 3 here: bob, carol, alice"],
        )
        self.assertEqual(self.bob.lines(),
                         ["* alice left the room", "[private] alice: psst", "* alice joined",
                          "alice: back"])

    def test_part_refusals(self):
        """/part of a room one is not in, of no such room, or of a bad name is refused."""
        self.send(self.alice_session, "/part #dev", "/part #nope", "/part #no!pe")
        self.assertEqual(
            [kind for kind, _ in refusals(self.alice)],
            ["not-in-room", "no-such-room", "invalid-room"],
        )
        self.assertEqual(refusals(self.alice)[:2],
                         [("not-in-room", "you are not in #dev"),
                          ("no-such-room", "no such room: #nope")])
        self.assertEqual(self.alice.room, "#lobby")

    def test_join_refusals(self):
        """A bad room name, or /join alone, is refused; the current room stays."""
        self.send(self.alice_session, "/join lobby", "/join #", "/join #" + "x" * 51,
                  "/join #a!", "/join")
        self.assertEqual(
            [kind for kind, _ in refusals(self.alice)],
            ["invalid-room"] * 4 + ["bad-usage"],
        )
        self.assertEqual(self.alice.room, "#lobby")
        self.assertEqual(self.hub.rooms_of(self.alice), [self.hub.default_room])

    def test_room_names_fold(self):
        """#Dev and #dev are one room; the first spelling is the room's display name."""
        self.send(self.alice_session, "/join #DEV")
        self.assertEqual(self.alice.room, "#dev")
        self.assertIs(self.hub.rooms_of(self.alice)[-1], self.hub.rooms_of(self.carol)[-1])

    def test_empty_room_disappears(self):
        """A room whose last member parts is gone; the default room stays even when empty."""
        self.send(self.carol_session, "/part #dev")
        self.carol.clear()
        self.send(self.carol_session, "/rooms", "/who #dev")
        self.assertEqual(self.carol.events[0], RoomList((("#lobby", 3, ""),)))
        self.assertEqual(refusals(self.carol), [("no-such-room", "no such room: #dev")])
        for session in (self.alice_session, self.bob_session, self.carol_session):
            self.send(session, "/part #lobby")
        self.assertEqual(self.hub.rooms(), (("#lobby", 0, ""),))

    def test_rename_and_quit_shown_once(self):
        """Sharing two rooms, one sees a rename and a quit once, unmarked."""
        self.send(self.alice_session, "/join #dev")
        self.carol.clear()
        self.send(self.carol_session, "/join #lobby")
        self.carol.clear()
        self.send(self.alice_session, "/nick alicia")
        self.send(self.alice_session, "/quit done")
        self.assertEqual(self.carol.lines(),
                         ["* alice is now known as alicia", "* alicia left (done)"])

    def test_msg_across_rooms(self):
        """/msg reaches a user in no shared room."""
        self.send(self.alice_session, "/msg carol psst")
        self.assertEqual(self.carol.lines(), ["[private] alice: psst"])


class RoomCommandTests(SessionTestMixin, SynchronousTestCase):
    """/who, /topic and /rooms, for the current room or a named one."""

    def setUp(self):
        super().setUp()
        self.alice_session, self.alice = self.join("alice")
        self.bob_session, self.bob = self.join("bob", "udp")
        self.send(self.bob_session, "/join #dev")
        self.alice.clear()
        self.bob.clear()

    def test_who_current_and_named(self):
        """/who is the current room; /who #room any room, member or not."""
        self.send(self.alice_session, "/who", "/who #DEV")
        self.assertEqual(
            self.alice.events,
            [WhoList("#lobby", (("alice", "tcp"), ("bob", "udp"))),
             WhoList("#dev", (("bob", "udp"),))],
        )
        self.assertEqual(self.alice.lines(),
                         ["* 2 in #lobby: alice (tcp), bob (udp)", "* 1 in #dev: bob (udp)"])

    def test_who_refusals(self):
        self.send(self.alice_session, "/who #nope", "/who #bad!", "/who bob")
        self.assertEqual([kind for kind, _ in refusals(self.alice)],
                         ["no-such-room", "invalid-room", "bad-usage"])

    def test_topic_show_none(self):
        """/topic of a room without one says so."""
        self.send(self.alice_session, "/topic")
        self.assertEqual(self.alice.events, [TopicIs("#lobby", "", "", 0.0)])
        self.assertEqual(self.alice.lines(), ["* #lobby has no topic"])

    def test_topic_set_and_show(self):
        """/topic text sets the current room's topic: every member sees it, the setter too."""
        self.clock.advance(42)
        self.send(self.bob_session, "/topic ship  it")
        self.assertEqual(self.bob.lines(), ["* bob set the topic: ship  it"])
        self.assertEqual(self.alice.lines(), [])
        self.send(self.alice_session, "/topic #dev")
        self.assertEqual(self.alice.events, [TopicIs("#dev", "ship  it", "bob", 42.0)])
        self.assertEqual(self.alice.lines(), ["* topic of #dev: ship  it (set by bob)"])

    def test_topic_named_room_by_member(self):
        """/topic #room text sets a room one is in without making it current."""
        self.send(self.bob_session, "/topic #lobby lobby talk")
        self.assertEqual(self.alice.lines(), ["* bob set the topic: lobby talk"])
        self.assertEqual(self.bob.lines(), ["[#lobby] * bob set the topic: lobby talk"])
        self.assertEqual(self.bob.room, "#dev")

    def test_topic_needs_membership(self):
        """Reading any room's topic is allowed; setting needs membership."""
        self.send(self.alice_session, "/topic #dev mine now", "/topic #nope x", "/topic #nope")
        self.assertEqual(
            refusals(self.alice),
            [("not-in-room", "you are not in #dev"), ("no-such-room", "no such room: #nope"),
             ("no-such-room", "no such room: #nope")],
        )
        self.assertEqual(self.bob.lines(), [])
        self.assertEqual(self.hub.room("#dev").topic, "")

    def test_rooms(self):
        """/rooms lists every room by name, with its member count and topic."""
        self.send(self.bob_session, "/topic release friday")
        self.alice.clear()
        self.send(self.alice_session, "/rooms")
        self.assertEqual(self.alice.events, [RoomList((("#dev", 1, "release friday"),
                                                       ("#lobby", 2, "")))])
        self.assertEqual(self.alice.lines(),
                         ["* 2 rooms:", "*   #dev (1): release friday", "*   #lobby (2)"])

    def test_rooms_containing(self):
        """/rooms TEXT lists the rooms with TEXT in the name, ignoring ASCII case."""
        self.send(self.bob_session, "/join #devops", "/join #ops")
        self.send(self.alice_session, "/rooms DEV")
        self.assertEqual(self.alice.events, [RoomList((("#dev", 1, ""), ("#devops", 1, "")), "DEV")])
        self.assertEqual(self.alice.lines(), ["* 2 rooms with 'DEV' in the name:",
                                              "*   #dev (1)", "*   #devops (1)"])

    def test_topic_longer_than_max_topic_is_refused(self):
        """A topic over --max-topic characters is refused and the old one stays."""
        self.send(self.bob_session, "/topic short", "/topic " + "x" * 301)
        self.assertEqual(
            refusals(self.bob), [("too-long", "topic too long (301 characters; at most 300)")]
        )
        self.assertEqual(self.hub.room("#dev").topic, "short")
        self.send(self.bob_session, "/topic " + "y" * 300)
        self.assertEqual(self.hub.room("#dev").topic, "y" * 300)


class RoomLimitTests(SessionTestMixin, SynchronousTestCase):
    """--max-rooms-per-user and --max-rooms refuse with kind too-many-rooms."""

    limits = Limits(max_rooms=3, max_rooms_per_user=2)

    def test_per_user(self):
        """A user in max_rooms_per_user rooms may not join another, but may switch among them."""
        session, alice = self.join("alice")
        self.send(session, "/join #dev", "/join #ops", "/join #lobby")
        [(kind, text)] = refusals(alice)
        self.assertEqual(kind, "too-many-rooms")
        self.assertEqual(text, "you are in 2 rooms, the most allowed: /part one first")
        self.assertEqual(alice.room, "#lobby")
        self.assertEqual(alice.events[-1], CurrentRoom("#lobby"))
        self.send(session, "/part #dev", "/join #ops")
        self.assertEqual(alice.room, "#ops")

    def test_service_wide(self):
        """With max_rooms rooms held, a new room is refused; existing ones may be joined."""
        alice_session, alice = self.join("alice")
        bob_session, bob = self.join("bob")
        self.send(alice_session, "/join #dev")
        self.send(bob_session, "/join #ops", "/part #lobby")
        self.send(alice_session, "/part #lobby", "/join #more")
        [(kind, text)] = refusals(alice)
        self.assertEqual(kind, "too-many-rooms")
        self.assertEqual(
            text, "the server holds 3 rooms, the most allowed: join an existing one (/rooms)"
        )
        self.assertEqual(alice.room, "#dev")
        self.send(alice_session, "/join #ops")
        self.assertEqual(alice.room, "#ops")


@implementer(IHistoryStore)
class MemoryHistory:
    """A history store in a list; C{recent} answers at once."""

    def __init__(self):
        self.recorded = []

    def record_turn(self, events):
        self.recorded.extend(events)

    def recent(self, room, limit, before, after=None):
        low = -1 if after is None else after
        lines = [event for event in self.recorded
                 if type(event) in PUBLIC_LINES and fold(event.room) == room
                 and low < event.id < before]
        return defer.succeed(lines[:limit] if after is not None else lines[-limit:])

    def newest_id(self):
        return defer.succeed(max((event.id for event in self.recorded), default=0))


class HistoryTests(SessionTestMixin, SynchronousTestCase):
    """/history [#room] [N] needs membership and a history store."""

    limits = Limits(flood=FloodPolicy(rate=0))  # 25 lines at once, all at once

    def setUp(self):
        self.history = MemoryHistory()
        super().setUp()
        self.alice_session, self.alice = self.join("alice")
        self.bob_session, self.bob = self.join("bob")
        self.send(self.bob_session, *[f"line {n}" for n in range(1, 26)])
        self.send(self.bob_session, "/join #dev", "dev line")
        self.alice.clear()
        self.bob.clear()

    def replayed(self, participant):
        """(room, [texts]) of each history block shown to C{participant}."""
        blocks = []
        for event in participant.events:
            if type(event) is HistoryStart:
                blocks.append((event.room, event.count, []))
            elif type(event) is Replayed:
                self.assertIsInstance(event.event, Said)
                blocks[-1][2].append(event.event.text)
            elif type(event) is HistoryEnd:
                self.assertEqual(event.room, blocks[-1][0])
        return blocks

    def test_fake_is_a_store(self):
        self.assertTrue(verifyObject(IHistoryStore, self.history))

    def test_default_count(self):
        """/history shows the current room's last 20 lines, oldest first, framed."""
        self.send(self.alice_session, "/history")
        self.assertEqual(self.replayed(self.alice),
                         [("#lobby", 20, [f"line {n}" for n in range(6, 26)])])
        self.assertEqual(self.alice.lines()[0], "* history of #lobby")
        self.assertEqual(self.alice.lines()[-1], "* end of history")
        self.assertEqual(self.bob.events, [])

    def test_count_and_named_room(self):
        """/history N and /history #room N, for a room one is in."""
        self.send(self.alice_session, "/history 2")
        self.send(self.bob_session, "/history #lobby 1", "/history #DEV")
        self.assertEqual(self.replayed(self.alice), [("#lobby", 2, ["line 24", "line 25"])])
        self.assertEqual(self.replayed(self.bob),
                         [("#lobby", 1, ["line 25"]), ("#dev", 1, ["dev line"])])

    def test_replayed_time_is_the_original(self):
        """Each replayed line keeps its own time; the block carries the time it is shown."""
        self.clock.advance(100)
        self.send(self.alice_session, "/history 1")
        [replayed] = [event for event in self.alice.events if type(event) is Replayed]
        self.assertEqual((replayed.event.time, replayed.now), (0.0, 100.0))

    def test_needs_membership(self):
        """/history of a room one is not in, or of no room, is refused."""
        self.send(self.alice_session, "/history #dev", "/history #nope 5", "/history 0")
        self.assertEqual(
            [kind for kind, _ in refusals(self.alice)],
            ["not-in-room", "no-such-room", "bad-usage"],
        )
        self.assertEqual(self.replayed(self.alice), [])
        self.send(self.alice_session, "/part", "/history")
        self.assertEqual(refusals(self.alice)[-1],
                         ("not-in-room", "you are in no room: /join #room first"))


class NoHistoryTests(SessionTestMixin, SynchronousTestCase):
    """Without a history store, /history is refused with kind unavailable."""

    def test_unavailable(self):
        session, alice = self.join("alice")
        self.send(session, "hello", "/history", "/history #lobby 5")
        self.assertEqual(refusals(alice),
                         [("unavailable", "this server keeps no history")] * 2)
        self.assertEqual(alice.lines(), ["! this server keeps no history"] * 2)


class RefusalKindTests(SessionTestMixin, SynchronousTestCase):
    """Every refusal carries the kind a front-end maps to its own code."""

    limits = Limits(max_rooms_per_user=2, flood=FloodPolicy(rate=0))

    def test_kinds(self):
        self.join("bob")
        self.send(self.join("carol")[0], "/join #dev")
        session, alice = self.connect()
        cases = [
            ("1alice", "invalid-nick"),
            ("bob", "nick-in-use"),
            ("/who", "not-allowed"),
            ("alice", None),
            ("/nick 1x", "invalid-nick"),
            ("/nick BOB", "nick-in-use"),
            ("/nick alice", "not-allowed"),
            ("/msg zed hi", "no-such-user"),
            ("/who #nope", "no-such-room"),
            ("/join lobby", "invalid-room"),
            ("/topic #dev mine", "not-in-room"),
            ("/history", "unavailable"),
            ("/join", "bad-usage"),
            ("/msg bob", "bad-usage"),
            ("/dance", "unknown-command"),
            ("/part #dev", "not-in-room"),
            ("/join #ops", None),
            ("/join #more", "too-many-rooms"),
            ("/part", None),
            ("/part", None),
            ("hello?", "not-in-room"),
        ]
        for line, kind in cases:
            alice.clear()
            self.send(session, line)
            self.assertEqual([k for k, _ in refusals(alice)], [kind] if kind else [], line)


class ClosingParticipant(FakeParticipant):
    """A participant whose C{close} answers later, or fails, or reports its connection lost."""

    def __init__(self, nick=None, via="tcp"):
        super().__init__(nick, via)
        self.closing = None  # a Deferred close answers with, or None for an answered one
        self.session = None  # told connection_lost from within close, like a transport may
        self.failure = None

    def close(self, reason):
        self.closed.append(reason)
        if self.session is not None:
            self.session.connection_lost()
        if self.failure is not None:
            return defer.fail(self.failure)
        if self.closing is not None:
            return self.closing
        return defer.succeed(None)


class EndTests(SessionTestMixin, SynchronousTestCase):
    """Session.end is the one place a session ends: once, closing the user at most once."""

    def setUp(self):
        super().setUp()
        self.alice_session, self.alice = self.join("alice", kind=ClosingParticipant)
        self.bob_session, self.bob = self.join("bob")

    def test_ends_once_and_closes_once(self):
        """With a goodbye the user is closed once; later ends and a lost connection do nothing."""
        d = self.alice_session.end("kicked", goodbye="you were kicked")
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(self.alice_session.gone)
        self.assertEqual(self.alice.closed, ["you were kicked"])
        again = self.alice_session.end("again", goodbye="again")
        self.assertIsNone(self.successResultOf(again))
        self.alice_session.connection_lost()
        self.alice_session.handle("/quit")
        self.clock.advance(0)
        self.assertEqual(self.alice.closed, ["you were kicked"])
        self.assertEqual(self.bob.lines(), ["* alice left (kicked)"])
        self.assertIsNone(self.registry.holder("alice"))
        self.assertEqual(self.hub.connected, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_goodbye_never_closes(self):
        """Without a goodbye the transport is gone already: close is never called."""
        d = self.alice_session.end("connection lost")
        self.assertIsNone(self.successResultOf(d))
        self.clock.advance(0)
        self.assertEqual(self.alice.closed, [])
        self.assertEqual(self.bob.lines(), ["* alice left (connection lost)"])

    def test_connection_lost_never_closes(self):
        """A lost connection ends the session without closing the user."""
        self.alice_session.connection_lost()
        self.alice_session.connection_lost()
        self.clock.advance(0)
        self.assertEqual(self.alice.closed, [])
        self.assertEqual(self.bob.lines(), ["* alice left (connection lost)"])

    def test_connection_lost_after_quit_is_a_no_op(self):
        """/quit then the transport's connection_lost: one close, one leave, with /quit's reason."""
        self.send(self.alice_session, "/quit bye all")
        self.alice_session.connection_lost()
        self.clock.advance(0)
        self.assertEqual(self.alice.closed, ["goodbye"])
        self.assertEqual(self.bob.lines(), ["* alice left (bye all)"])

    def test_lost_from_within_close(self):
        """A transport reporting its connection lost while closing: one close, one leave."""
        self.alice.session = self.alice_session
        self.successResultOf(self.alice_session.end("kicked", goodbye="bye"))
        self.clock.advance(0)
        self.assertEqual(self.alice.closed, ["bye"])
        self.assertEqual(self.bob.lines(), ["* alice left (kicked)"])

    def test_end_waits_for_close(self):
        """end()'s Deferred fires once the user is closed; the session is over at once."""
        self.alice.closing = defer.Deferred()
        d = self.alice_session.end("kicked", goodbye="bye")
        self.assertNoResult(d)
        self.assertTrue(self.alice_session.gone)
        self.assertIsNone(self.registry.holder("alice"))
        self.alice.closing.callback(None)
        self.assertIsNone(self.successResultOf(d))

    def test_close_failure_is_logged_not_raised(self):
        """A close that fails is logged; end()'s Deferred still fires with None."""
        self.alice.failure = RegistryError("close exploded")
        d = self.alice_session.end("kicked", goodbye="bye")
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(self.flushLoggedErrors(RegistryError)), 1)
        self.assertTrue(self.alice_session.gone)

    def test_events_of_the_turn_delivered_before_close(self):
        """What the turn owed the user is handed over before it is closed."""
        self.send(self.bob_session, "/who")
        self.bob_session.handle("last words")
        self.alice_session.end("kicked", goodbye="bye")
        self.assertEqual(self.alice.lines(), ["bob: last words"])
        self.assertEqual(self.alice.closed, ["bye"])

    def test_end_before_joining(self):
        """A session ended at the nickname prompt: closed, no leave shown, no timer left."""
        session, carol = self.connect()
        self.successResultOf(session.end("quit", goodbye="goodbye"))
        self.clock.advance(0)
        self.assertEqual(carol.closed, ["goodbye"])
        self.assertEqual(self.bob.lines(), [])
        self.assertEqual(self.hub.connected, 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_shutdown_ends_everyone_once(self):
        """hub.close_all ends every session, joined or not, through end(): one close each."""
        session, carol = self.connect()
        d = self.hub.close_all("server shutting down")
        self.successResultOf(d)
        self.assertEqual(self.alice.closed, ["server shutting down"])
        self.assertEqual(carol.closed, ["server shutting down"])
        self.assertEqual(self.bob.closed, ["server shutting down"])
        for each in (self.alice_session, self.bob_session, session):
            self.assertTrue(each.gone)
            each.connection_lost()
        self.clock.advance(0)
        self.assertEqual(self.bob.lines(), [])
        self.assertEqual(self.alice.closed, ["server shutting down"])
        self.assertEqual(self.hub.connected, 0)
