"""
Back-pressure: a reactor turn reads no more than the next one can write, so the server slows
senders down instead of dropping readers who read at a normal pace.

L{InputGate} alone on a clock whose turns run as a reactor's do; then L{LineChatProtocol} on
C{StringTransport}s; then the real service on loopback sockets, where five senders paste far
more than one turn can write and every reader gets every line, in order.  (In one process the
readers keep up with the server, so that last test also passes without the gate; the drop it
prevents shows with a separate load generator: the benchmark's step at twice the saturation
rate.)
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.limits import Admission, Limits
from chatservice.core.nicks import NickRegistry
from chatservice.frontends.backpressure import LINE_COST, TURN_BUDGET, InputGate
from chatservice.frontends.line import LineChatFactory
from tests import support
from tests.fakes import line_user


class TurnClock(Clock):
    """A clock whose L{turn} runs only what was due when it began, as one reactor
    iteration does (C{Clock.advance} also runs what those calls schedule for now)."""

    def turn(self):
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class Source:
    """An input held by the gate; counts lines when opened, as a front-end does."""

    def __init__(self, gate, name, lines=0):
        self.gate = gate
        self.name = name
        self.lines = lines
        self.opened = []

    def gate_opened(self):
        self.opened.append(self.name)
        self.gate.spend(self.lines)


class InputGateTests(SynchronousTestCase):
    def setUp(self):
        self.clock = TurnClock()
        self.gate = InputGate(self.clock, budget=10)

    def test_defaults(self):
        self.assertEqual((TURN_BUDGET, LINE_COST), (128 * 1024, 40))

    def test_a_full_turn_closes_it_until_the_next_turn(self):
        self.assertFalse(self.gate.closed)
        self.gate.spend(9)
        self.assertFalse(self.gate.closed)
        self.gate.spend(1)
        self.assertTrue(self.gate.closed)
        first, second = Source(self.gate, "a"), Source(self.gate, "b")
        self.gate.hold(first)
        self.gate.hold(second)
        self.clock.advance(0)
        self.assertFalse(self.gate.closed)
        self.assertEqual((first.opened, second.opened), (["a"], ["b"]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_opening_stops_when_a_resumed_input_fills_the_turn(self):
        """Held inputs resume oldest first while the gate stays open; the rest wait a turn."""
        self.gate.spend(10)
        sources = [Source(self.gate, name, lines=6) for name in "abc"]
        for source in sources:
            self.gate.hold(source)
        self.clock.turn()
        self.assertEqual([s.opened for s in sources], [["a"], ["b"], []])
        self.clock.turn()
        self.assertEqual([s.opened for s in sources], [["a"], ["b"], ["c"]])

    def test_forgotten_inputs_are_not_resumed(self):
        source = Source(self.gate, "a")
        self.gate.spend(10)
        self.gate.hold(source)
        self.gate.forget(source)
        self.clock.advance(0)
        self.assertEqual(source.opened, [])


class LineProtocolTests(SynchronousTestCase):
    """The line front-end holds a read and stops reading while the gate is closed."""

    def setUp(self):
        self.clock = TurnClock()
        self.gate = InputGate(self.clock, budget=4 * (len(b"a0") + LINE_COST))  # four short lines a turn
        limits = Limits(flood=FloodPolicy(rate=0))
        self.factory = LineChatFactory(
            Hub(self.clock), NickRegistry(), self.clock, Admission(100, 100), limits, gate=self.gate
        )

    def connect(self, nick):
        return line_user(self.factory, self.clock, nick)

    def lines(self, transport):
        return transport.value().decode().split("\r\n")[:-1]

    def test_uses_the_factorys_gate(self):
        self.assertIs(self.connect("alice")[0].factory.gate, self.gate)

    def test_a_spent_budget_holds_the_rest_until_the_next_turn(self):
        alice, alice_out = self.connect("alice")
        bob, bob_out = self.connect("bob")
        carol, carol_out = self.connect("carol")
        alice_out.clear()
        bob_out.clear()
        alice.dataReceived(b"".join(b"a%d\n" % n for n in range(6)))
        bob.dataReceived(b"b0\nb1\n")
        self.assertEqual((alice_out.producerState, bob_out.producerState),
                         ("paused", "paused"))
        self.clock.turn()  # the end of the turn: four lines go out
        self.assertEqual(self.lines(carol_out), [f"alice: a{n}" for n in range(4)])
        carol_out.clear()
        self.clock.turn()  # the next: the held lines, oldest first
        self.clock.turn()
        self.assertEqual(self.lines(carol_out), ["alice: a4", "alice: a5", "bob: b0", "bob: b1"])
        self.assertEqual((alice_out.producerState, bob_out.producerState),
                         ("producing", "producing"))
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_closed_connection_leaves_nothing_held(self):
        alice, alice_out = self.connect("alice")
        self.gate.spend(self.gate.left())
        alice.dataReceived(b"hi\n")
        alice.connectionLost(None)
        self.clock.advance(0)
        self.assertFalse(self.gate.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flood_pause_and_gate_together(self):
        """Reading resumes only once neither the session nor the gate holds input."""
        alice, alice_out = self.connect("alice")
        alice.pause_input()
        self.gate.spend(self.gate.left())
        alice.dataReceived(b"x\n")
        alice.resume_input()
        self.assertEqual(alice_out.producerState, "paused")  # the gate still holds it
        self.clock.advance(0)
        self.assertEqual(alice_out.producerState, "producing")

class OverloadTests(TestCase):
    """Real sockets: pastes far bigger than one turn can write reach every reader whole."""

    timeout = 60

    @defer.inlineCallbacks
    def test_nobody_is_dropped_and_every_line_arrives(self):
        from twisted.internet import reactor

        # A small send queue makes the old failure quick: one turn's fan-out of five
        # 64 KiB reads (about 13,000 lines) used to pass it at once.
        service, port = support.start_chat_server(
            reactor, "--max-backlog", "65536", "--flood-rate", "0", "--max-per-ip", "0"
        )
        self.addCleanup(service.stopService)
        users = []
        for index in range(25):
            user = yield support.connect(reactor, port)
            self.addCleanup(user.abort)
            yield support.log_in(user, f"u{index}")
            users.append(user)
        for user in users:  # the others' joins
            yield user.read_lines(len(users) - 1 - users.index(user))
        senders, readers = users[:5], users[5:]
        per_sender = 4000
        for number, sender in enumerate(senders):
            sender.send(b"".join(b"line %d.%d\n" % (number, n) for n in range(per_sender)))
        for reader in readers:
            got = yield reader.read_lines(len(senders) * per_sender, timeout=40)
            for number in range(len(senders)):
                mine = [line for line in got if line.startswith(f"u{number}: ")]
                self.assertEqual(mine, [f"u{number}: line {number}.{n}" for n in range(per_sender)])
        for number, sender in enumerate(senders):
            got = yield sender.read_lines((len(senders) - 1) * per_sender, timeout=40)
            self.assertFalse([line for line in got if "too slow" in line])
        self.assertFalse([user for user in users if user.closed])
