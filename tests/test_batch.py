"""
Tests for L{chatservice.core.batch}: L{Batch} and L{Shared}, and the L{Turn} that collects one
reactor turn's events and hands them out at its end: one deliver per recipient, in publication
order, senders' views as slices of the shared run, joins and parts within the turn, rooms held
back during a replay, leavers served first, failures isolated, sinks after the members.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.batch import Batch, Shared, Turn
from chatservice.core.events import Joined, Left, Notice, Private, Said
from chatservice.core.rooms import Room
from tests.fakes import (
    DeliveryError,
    FailingDeferredSink,
    FailingParticipant,
    FakeParticipant,
    RecordingSink,
    SinkError,
)


def line(n, room="#a", nick="x"):
    return Said(n, float(n), room, nick, f"line {n}")


class BatchTests(SynchronousTestCase):
    """A batch is slices of shared runs; iterating it gives the events."""

    def test_of(self):
        """Batch.of wraps events in one run shared with nobody."""
        events = (Notice("a"), Notice("b"))
        batch = Batch.of([Notice("a"), Notice("b")])
        [(shared, start, stop)] = batch.parts
        self.assertEqual((shared.events, start, stop), (events, 0, 2))
        self.assertEqual(list(batch), list(events))
        self.assertEqual(len(batch), 2)
        self.assertIs(batch.events, shared.events)

    def test_slices(self):
        """Parts are cut from their runs, in order; events joins them."""
        one = Shared(tuple(Notice(str(n)) for n in range(5)))
        two = Shared((Notice("x"),))
        batch = Batch(((one, 0, 2), (two, 0, 1), (one, 3, 5)))
        self.assertEqual([event.text for event in batch], ["0", "1", "x", "3", "4"])
        self.assertEqual(len(batch), 5)
        self.assertEqual(batch.events, tuple(batch))
        self.assertEqual(len(one), 5)
        self.assertEqual(one.encoded, {})
        self.assertIn("Notice(text='x')", repr(batch))

    def test_empty(self):
        """An empty batch iterates over nothing."""
        self.assertEqual(list(Batch(())), [])
        self.assertEqual(Batch.of([]).events, ())


class TurnTestMixin:
    """A turn on a fake clock, rooms, and members put in them by hand (as the hub does)."""

    def setUp(self):
        self.clock = Clock()
        self.rooms_of = {}
        self.sink = RecordingSink()
        self.failed = []
        self.turn = Turn(self.clock, self.rooms_of, [self.sink], on_failure=self.failed.append)
        self.a, self.b = Room("#a"), Room("#b")

    def member(self, nick, *rooms, kind=FakeParticipant):
        participant = kind(nick)
        self.rooms_of[participant] = list(rooms)
        for room in rooms:
            room.members[participant] = None
        return participant

    def join(self, participant, room):
        self.turn.joined(participant, room)
        room.members[participant] = None
        self.rooms_of[participant].append(room)

    def part(self, participant, room):
        self.turn.parted(participant, room)
        del room.members[participant]
        self.rooms_of[participant].remove(room)


class TurnTests(TurnTestMixin, SynchronousTestCase):
    """Publishing, handing out, sinks and end-of-turn calls."""

    def test_one_flush_per_turn(self):
        """Publishing schedules one callLater(0); nothing is delivered before it runs."""
        alice = self.member("alice", self.a)
        self.turn.publish(line(1), self.a)
        self.turn.publish(line(2), self.a)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(alice.deliveries, [])
        self.clock.advance(0)
        self.assertEqual(alice.events, [line(1), line(2)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flush_by_hand(self):
        """flush() hands out now and cancels the scheduled call; an empty flush does nothing."""
        alice = self.member("alice", self.a)
        self.turn.publish(line(1), self.a)
        self.turn.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.turn.flush()
        self.assertEqual(len(alice.deliveries), 1)

    def test_room_members_share_one_batch(self):
        """Everyone in one room who sees the same gets the very same batch of one run."""
        alice, bob = self.member("alice", self.a), self.member("bob", self.a)
        self.turn.publish(line(1), self.a)
        self.turn.publish(line(2), self.a)
        self.turn.flush()
        self.assertIs(alice.deliveries[0], bob.deliveries[0])
        [(shared, start, stop)] = alice.deliveries[0].parts
        self.assertEqual((shared.events, start, stop), ((line(1), line(2)), 0, 2))

    def test_exclude(self):
        """The excluded member does not see its event; a view of nothing is not delivered."""
        alice, bob = self.member("alice", self.a), self.member("bob", self.a)
        self.turn.publish(line(1), self.a, exclude=alice)
        self.turn.flush()
        self.assertEqual(alice.deliveries, [])
        self.assertEqual(bob.events, [line(1)])

    def test_rooms_apart(self):
        """A room's events reach its members only."""
        alice, bob = self.member("alice", self.a), self.member("bob", self.b)
        self.turn.publish(line(1), self.a)
        self.turn.publish(line(2, "#b"), self.b)
        self.turn.flush()
        self.assertEqual(alice.events, [line(1)])
        self.assertEqual(bob.events, [line(2, "#b")])

    def test_several_rooms_one_deliver_in_order(self):
        """A member of two rooms gets one deliver with both rooms' events interleaved."""
        alice = self.member("alice", self.a, self.b)
        bob = self.member("bob", self.a, self.b)
        self.turn.publish(line(1), self.a)
        self.turn.publish(line(2, "#b"), self.b)
        self.turn.publish(line(3), self.a)
        self.turn.tell(alice, Notice("you"))
        self.turn.publish(line(4, "#b"), self.b)
        self.turn.flush()
        self.assertEqual(len(alice.deliveries), 1)
        self.assertEqual(alice.events,
                         [line(1), line(2, "#b"), line(3), Notice("you"), line(4, "#b")])
        self.assertEqual(bob.events, [line(1), line(2, "#b"), line(3), line(4, "#b")])
        self.assertIs(alice.deliveries[0].parts[0][0], bob.deliveries[0].parts[0][0])

    def test_publish_to(self):
        """An event for an audience reaches each of it once, in order with the rest."""
        alice = self.member("alice", self.a, self.b)
        bob = self.member("bob", self.b)
        carol = self.member("carol", self.a)
        event = Left(5, 5.0, ("#a", "#b"), "zed", "quit")
        self.turn.publish(line(1), self.a)
        self.turn.publish_to(event, {alice: None, bob: None})
        self.turn.publish(line(2), self.a)
        self.turn.flush()
        self.assertEqual(alice.events, [line(1), event, line(2)])
        self.assertEqual(bob.events, [event])
        self.assertEqual(carol.events, [line(1), line(2)])
        self.assertEqual(self.sink.recorded, [line(1), event, line(2)])

    def test_tell(self):
        """A told event reaches its one participant, member of no room or not."""
        alice = self.member("alice", self.a)
        lonely = self.member("lonely")
        self.turn.tell(lonely, Notice("hello"))
        self.turn.tell(alice, Notice("hi"))
        self.turn.flush()
        self.assertEqual(lonely.events, [Notice("hello")])
        self.assertEqual(alice.events, [Notice("hi")])
        self.assertEqual(self.sink.recorded, [])

    def test_sinks_after_members_stored_only(self):
        """Sinks get the turn's stored events, in one call, after every member got its batch;
        private ones never."""
        alice, bob = self.member("alice", self.a), self.member("bob", self.a)
        order = []
        alice.deliver = lambda batch: order.append("alice")
        self.sink.record_turn = lambda events: order.append(("sink", events))
        self.turn.publish(line(1), self.a)
        self.turn.tell(bob, Private(2, 2.0, "alice", "bob", "psst"))
        self.turn.tell(bob, Notice("n"))
        self.turn.record(Left(3, 3.0, ("#a",), "zed", "server shutting down"))
        self.turn.flush()
        self.assertEqual(order, [
            "alice",
            ("sink", (line(1), Left(3, 3.0, ("#a",), "zed", "server shutting down"))),
        ])

    def test_failing_sink(self):
        """A sink whose Deferred fails is logged; the next sink still records."""
        self.turn.sinks[:0] = [FailingDeferredSink()]
        self.turn.record(line(1))
        self.turn.flush()
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)
        self.assertEqual(self.sink.recorded, [line(1)])

    def test_then(self):
        """End-of-turn calls run after members and sinks; one that raises is logged."""
        alice = self.member("alice", self.a)
        calls = []
        self.turn.publish(line(1), self.a)
        self.turn.then(lambda: calls.append((len(alice.deliveries), len(self.sink.recorded))))
        self.turn.then(lambda: 1 / 0)
        self.turn.then(lambda: calls.append("last"))
        self.clock.advance(0)
        self.assertEqual(calls, [(1, 1), "last"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_then_alone_schedules(self):
        """then() alone ends a turn too."""
        calls = []
        self.turn.then(lambda: calls.append(1))
        self.clock.advance(0)
        self.assertEqual(calls, [1])

    def test_failure_isolated(self):
        """A deliver that raises is logged and reported after everyone else had the turn."""
        alice = self.member("alice", self.a)
        mallory = self.member("mallory", self.a, kind=FailingParticipant)
        bob = self.member("bob", self.a)
        self.turn.publish(line(1), self.a)
        self.turn.flush()
        self.assertEqual(alice.events, [line(1)])
        self.assertEqual(bob.events, [line(1)])
        self.assertEqual(self.failed, [mallory])
        self.assertEqual(len(self.flushLoggedErrors(DeliveryError)), 1)


class SlicedViewTests(TurnTestMixin, SynchronousTestCase):
    """A sender's view is the room's run with its own lines cut: slices, not a copy."""

    def test_sender_cut_from_the_run(self):
        """Parts reference the listener's run; one more part than own lines in the middle."""
        listener = self.member("listener", self.a)
        sender = self.member("sender", self.a)
        other = self.member("other", self.a)
        own = {100, 500, 1500}
        for n in range(2000):
            self.turn.publish(line(n), self.a, exclude=sender if n in own else other)
        self.turn.flush()
        [(run, *whole)] = listener.deliveries[0].parts
        self.assertEqual(whole, [0, 2000])
        [view] = sender.deliveries
        self.assertEqual([(shared is run, start, stop) for shared, start, stop in view.parts],
                         [(True, 0, 100), (True, 101, 500), (True, 501, 1500), (True, 1501, 2000)])
        self.assertEqual(len(view), 1997)
        self.assertEqual([event.id for event in other.deliveries[0]], sorted(own))

    def test_own_lines_at_the_edges(self):
        """Own lines first and last leave no empty slice."""
        self.member("listener", self.a)
        sender = self.member("sender", self.a)
        self.turn.publish(line(0), self.a, exclude=sender)
        self.turn.publish(line(1), self.a)
        self.turn.publish(line(2), self.a, exclude=sender)
        self.turn.flush()
        [view] = sender.deliveries
        self.assertEqual([(start, stop) for _, start, stop in view.parts], [(1, 2)])

    def test_told_events_inserted_as_own_runs(self):
        """A private line is a one-event run of its own, between slices of the room's run."""
        listener = self.member("listener", self.a)
        alice = self.member("alice", self.a)
        private = Private(2, 2.0, "bob", "alice", "psst")
        self.turn.publish(line(1), self.a)
        self.turn.tell(alice, private)
        self.turn.publish(line(3), self.a)
        self.turn.flush()
        run = listener.deliveries[0].parts[0][0]
        [view] = alice.deliveries
        self.assertEqual(list(view), [line(1), private, line(3)])
        shared = [part[0] for part in view.parts]
        self.assertEqual([s is run for s in shared], [True, False, True])
        self.assertEqual(shared[1].events, (private,))

    def test_sender_in_two_rooms_cut_from_the_merged_run(self):
        """A member of two rooms who speaks is cut from the run its like members get."""
        listener = self.member("listener", self.a, self.b)
        sender = self.member("sender", self.a, self.b)
        self.turn.publish(line(1), self.a)
        self.turn.publish(line(2, "#b"), self.b, exclude=sender)
        self.turn.publish(line(3), self.a)
        self.turn.flush()
        [(merged, *whole)] = listener.deliveries[0].parts
        self.assertEqual(whole, [0, 3])
        self.assertEqual(list(sender.deliveries[0]), [line(1), line(3)])
        self.assertEqual({part[0] for part in sender.deliveries[0].parts}, {merged})


class MembershipWithinTurnTests(TurnTestMixin, SynchronousTestCase):
    """Joins and parts inside a turn: each member sees the room while it is in it."""

    def test_join(self):
        """A joiner sees the room's events from its join on."""
        alice = self.member("alice", self.b)
        self.turn.publish(line(1), self.a)
        self.join(alice, self.a)
        self.turn.publish(line(2), self.a)
        self.turn.publish(line(3, "#b"), self.b)
        self.turn.flush()
        self.assertEqual(alice.events, [line(2), line(3, "#b")])

    def test_part(self):
        """A member who parts sees the room's events up to its part."""
        alice = self.member("alice", self.a, self.b)
        self.turn.publish(line(1), self.a)
        self.part(alice, self.a)
        self.turn.publish(line(2), self.a)
        self.turn.publish(line(3, "#b"), self.b)
        self.turn.flush()
        self.assertEqual(alice.events, [line(1), line(3, "#b")])

    def test_join_part_join(self):
        """In, out, in: the two windows, not the gap."""
        alice = self.member("alice")
        for n in range(7):
            if n == 1:
                self.join(alice, self.a)
            elif n == 3:
                self.part(alice, self.a)
            elif n == 5:
                self.join(alice, self.a)
            self.turn.publish(line(n), self.a)
        self.turn.flush()
        self.assertEqual([event.id for event in alice.events], [1, 2, 5, 6])

    def test_next_turn_is_plain(self):
        """Windows last one turn: the next turn the member is an ordinary member."""
        alice, bob = self.member("alice"), self.member("bob", self.a)
        self.join(alice, self.a)
        self.turn.flush()
        self.turn.publish(line(1), self.a)
        self.turn.flush()
        self.assertIs(alice.deliveries[0], bob.deliveries[0])


class HoldTests(TurnTestMixin, SynchronousTestCase):
    """A room held back from one member (its replay runs) keeps its events for later."""

    def test_held_across_turns(self):
        """Held events wait; release returns them in order; other rooms flow meanwhile."""
        alice = self.member("alice", self.b)
        self.join(alice, self.a)
        self.turn.hold(alice, self.a)
        self.assertTrue(self.turn.holding(alice, self.a))
        self.assertFalse(self.turn.holding(alice, self.b))
        self.turn.publish(line(1), self.a)
        self.turn.publish(line(2, "#b"), self.b)
        self.turn.flush()
        self.turn.publish(line(3), self.a)
        self.turn.flush()
        self.assertEqual(alice.events, [line(2, "#b")])
        self.assertEqual(self.turn.release(alice, self.a), [line(1), line(3)])
        self.assertFalse(self.turn.holding(alice, self.a))
        self.assertEqual(self.turn.release(alice, self.a), [])

    def test_release_takes_this_turns_events(self):
        """
        Released mid-turn, the room's events of this turn so far come with the held ones (in
        order, after them) and leave the member's view; later ones flow as usual.
        """
        alice = self.member("alice", self.a)
        bob = self.member("bob", self.a)
        self.turn.hold(alice, self.a)
        self.turn.publish(line(1), self.a)
        self.turn.flush()
        self.turn.publish(line(2), self.a)
        self.turn.publish(line(3), self.a, exclude=alice)  # its own line: not shown
        held = self.turn.release(alice, self.a)
        self.assertEqual(held, [line(1), line(2)])
        for event in held:
            self.turn.tell(alice, event)
        self.turn.publish(line(4), self.a)
        self.turn.flush()
        self.assertEqual(alice.events, [line(1), line(2), line(4)])
        self.assertEqual([event.id for event in bob.events], [1, 2, 3, 4])

    def test_release_after_join_this_turn(self):
        """Released in the turn it joined: only what came after the join."""
        alice = self.member("alice")
        self.turn.publish(line(1), self.a)
        self.join(alice, self.a)
        self.turn.hold(alice, self.a)
        self.turn.publish(line(2), self.a)
        self.assertEqual(self.turn.release(alice, self.a), [line(2)])

    def test_release_after_part_this_turn(self):
        """Released after parting in this turn: what came before the part."""
        alice = self.member("alice", self.a)
        self.turn.hold(alice, self.a)
        self.turn.publish(line(1), self.a)
        self.part(alice, self.a)
        self.turn.publish(line(2), self.a)
        self.assertEqual(self.turn.release(alice, self.a), [line(1)])
        self.turn.flush()
        self.assertEqual(alice.events, [])


class LeavingTests(TurnTestMixin, SynchronousTestCase):
    """flush_to hands a leaver what it is owed now; forget drops it from the turn."""

    def test_flush_to(self):
        """What the turn owes is delivered at once; nothing later in the turn."""
        alice = self.member("alice", self.a, self.b)
        bob = self.member("bob", self.a)
        self.turn.publish(line(1), self.a)
        self.turn.tell(alice, Notice("bye"))
        self.turn.publish(line(2, "#b"), self.b)
        self.turn.flush_to(alice)
        self.assertEqual(alice.events, [line(1), Notice("bye"), line(2, "#b")])
        self.turn.publish(line(3), self.a)
        self.turn.flush()
        self.assertEqual(len(alice.deliveries), 1)
        self.assertEqual([event.id for event in bob.events], [1, 3])

    def test_flush_to_nothing_owed(self):
        """No events this turn: no deliver."""
        alice = self.member("alice", self.a)
        self.turn.flush_to(alice)
        self.assertEqual(alice.deliveries, [])

    def test_flush_to_drops_held(self):
        """A leaver's held room is dropped with it."""
        alice = self.member("alice", self.a)
        self.turn.hold(alice, self.a)
        self.turn.publish(line(1), self.a)
        self.turn.flush_to(alice)
        self.assertEqual(alice.deliveries, [])
        self.assertFalse(self.turn.holding(alice, self.a))
        self.turn.flush()
        self.assertEqual(alice.deliveries, [])

    def test_forget(self):
        """A forgotten participant gets nothing more this turn, told or published."""
        alice = self.member("alice", self.a)
        self.turn.tell(alice, Notice("one"))
        self.turn.forget(alice)
        self.turn.publish(line(1), self.a)
        self.turn.flush()
        self.assertEqual(alice.deliveries, [])


class ReplayLikeTests(TurnTestMixin, SynchronousTestCase):
    """The hub's replay pattern over the turn alone: hold, then(), release by tell."""

    def test_then_answer_then_release(self):
        """Held lines come after the replayed block, the same turn the answer comes."""
        alice = self.member("alice")
        bob = self.member("bob", self.a)
        self.join(alice, self.a)
        self.turn.hold(alice, self.a)
        self.turn.publish(Joined(1, 1.0, "#a", "alice", "tcp"), self.a, exclude=alice)
        answer = defer.Deferred()

        def replayed(_):
            self.turn.tell(alice, Notice("history"))
            for event in self.turn.release(alice, self.a):
                self.turn.tell(alice, event)

        answer.addCallback(replayed)
        self.turn.then(lambda: None)
        self.clock.advance(0)
        self.turn.publish(line(2), self.a)
        self.clock.advance(0)
        self.turn.publish(line(3), self.a)
        answer.callback(None)
        self.turn.publish(line(4), self.a)
        self.clock.advance(0)
        self.assertEqual(alice.events, [Notice("history"), line(2), line(3), line(4)])
        self.assertEqual([event.id for event in bob.events], [1, 2, 3, 4])
