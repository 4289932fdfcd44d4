"""
Tests for L{chatservice.core.room}: membership, end-of-turn fan-out, isolation of failures, sinks and
shutdown.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from chatservice.core.errors import NoSuchUser
from chatservice.core.events import Emote, Joined, Left, Notice, Private, PrivateSent, Renamed, Said
from chatservice.core.interfaces import IEventSink, IParticipant
from chatservice.core.room import Room
from tests.fakes import (
    DeliveryError,
    FailingDeferredSink,
    FailingParticipant,
    FakeParticipant,
    RaisingSink,
    RecordingSink,
    SinkError,
)


class RoomTestMixin:
    """A room on a fake clock, and a way to put people in it."""

    sinks = ()

    def setUp(self):
        self.clock = Clock()
        self.room = Room(self.clock, sinks=self.sinks)

    def member(self, nick, via="tcp", kind=FakeParticipant):
        """Enter and join a participant called C{nick}, as a session would."""
        participant = kind(nick, via)
        self.room.enter(participant)
        self.room.join(participant)
        return participant

    def settle(self, *participants):
        """Finish the turn and forget what it delivered."""
        self.clock.advance(0)
        for participant in participants:
            participant.clear()


class FakeParticipantTests(SynchronousTestCase):
    """The test fakes honour the interfaces they claim."""

    def test_participant_provides_interface(self):
        """FakeParticipant provides IParticipant."""
        self.assertTrue(verifyObject(IParticipant, FakeParticipant("alice")))
        self.assertTrue(verifyObject(IParticipant, FailingParticipant("bob")))

    def test_sinks_provide_interface(self):
        """The fake sinks provide IEventSink."""
        for sink in [RecordingSink(), RaisingSink(), FailingDeferredSink()]:
            self.assertTrue(verifyObject(IEventSink, sink))


class MembershipTests(RoomTestMixin, SynchronousTestCase):
    """Joining, finding, renaming and leaving."""

    def test_join_adds_member(self):
        """A joined participant is a member, found by any case of its nick."""
        alice = self.member("alice")
        self.assertIn(alice, self.room)
        self.assertEqual(len(self.room), 1)
        self.assertIs(self.room.find("ALICE"), alice)
        self.assertEqual(self.room.members(), [alice])

    def test_join_announces_to_others(self):
        """The others see '* X joined'; the joiner does not."""
        alice = self.member("alice")
        self.settle(alice)
        bob = self.member("bob", "udp")
        self.clock.advance(0)
        self.assertEqual(alice.deliveries, [(Joined("bob", "udp"),)])
        self.assertEqual(bob.deliveries, [])

    def test_entered_is_not_member(self):
        """Entering is being connected, not being in the room."""
        carol = FakeParticipant(None)
        self.room.enter(carol)
        self.assertEqual(self.room.connected, 1)
        self.assertEqual(len(self.room), 0)
        self.assertNotIn(carol, self.room)

    def test_who_in_joining_order(self):
        """who() lists (nick, via) in the order people joined."""
        self.member("carol", "udp")
        self.member("alice")
        self.member("bob", "udp")
        self.assertEqual(self.room.who(), [("carol", "udp"), ("alice", "tcp"), ("bob", "udp")])

    def test_rename_rekeys(self):
        """After rename the member is found by the new nick only."""
        alice = self.member("alice")
        alice.nick = "alicia"
        self.room.rename(alice, "alice", "alicia")
        self.assertIs(self.room.find("Alicia"), alice)
        self.assertIsNone(self.room.find("alice"))
        self.assertIn(alice, self.room)
        self.assertEqual(len(self.room), 1)

    def test_rename_told_to_everyone(self):
        """Everyone, the renamed member too, sees the rename."""
        alice, bob = self.member("alice"), self.member("bob")
        self.settle(alice, bob)
        alice.nick = "alicia"
        self.room.rename(alice, "alice", "alicia")
        self.clock.advance(0)
        self.assertEqual(alice.deliveries, [(Renamed("alice", "alicia"),)])
        self.assertEqual(bob.deliveries, [(Renamed("alice", "alicia"),)])

    def test_who_keeps_joining_order_after_rename(self):
        """A rename does not move the member in who()."""
        alice = self.member("alice")
        self.member("bob", "udp")
        self.member("carol")
        alice.nick = "alicia"
        self.room.rename(alice, "alice", "alicia")
        self.assertEqual(self.room.who(), [("alicia", "tcp"), ("bob", "udp"), ("carol", "tcp")])

    def test_leave_removes(self):
        """A member who leaves is no longer found."""
        alice, bob = self.member("alice"), self.member("bob")
        self.room.leave(alice, "quit")
        self.assertNotIn(alice, self.room)
        self.assertIsNone(self.room.find("alice"))
        self.assertEqual(self.room.members(), [bob])

    def test_leave_told_to_others(self):
        """The others see '* X left (reason)'; the leaver does not."""
        alice, bob = self.member("alice"), self.member("bob")
        self.settle(alice, bob)
        self.room.leave(alice, "gone fishing")
        self.clock.advance(0)
        self.assertEqual(bob.deliveries, [(Left("alice", "gone fishing"),)])
        self.assertEqual(alice.deliveries, [])

    def test_welcome_text(self):
        """The welcome names the user and everyone online."""
        self.member("alice")
        bob = self.member("bob")
        self.assertEqual(self.room.welcome_text(bob), "you are bob; 2 online: alice, bob")


class FanOutTests(RoomTestMixin, SynchronousTestCase):
    """Events are collected during a turn and handed out once at its end."""

    def setUp(self):
        super().setUp()
        self.alice, self.bob, self.carol, self.dave = (
            self.member(nick) for nick in ["alice", "bob", "carol", "dave"]
        )
        self.everyone = [self.alice, self.bob, self.carol, self.dave]
        self.settle(*self.everyone)

    def test_nothing_before_end_of_turn(self):
        """Publishing schedules one flush and delivers nothing yet."""
        self.room.publish(Said("alice", "one"), exclude=self.alice)
        self.room.publish(Said("alice", "two"), exclude=self.alice)
        self.assertEqual(self.bob.deliveries, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_say_goes_to_all_but_sender(self):
        """A line goes to every member but its sender."""
        self.room.publish(Said("alice", "hi"), exclude=self.alice)
        self.clock.advance(0)
        for other in [self.bob, self.carol, self.dave]:
            self.assertEqual(other.deliveries, [(Said("alice", "hi"),)])
        self.assertEqual(self.alice.deliveries, [])

    def test_one_deliver_per_turn(self):
        """Everything from one turn reaches each recipient in one call, in order."""
        lines = [Said("alice", "one"), Emote("alice", "waves"), Said("bob", "two")]
        self.room.publish(lines[0], exclude=self.alice)
        self.room.publish(lines[1], exclude=self.alice)
        self.room.publish(lines[2], exclude=self.bob)
        self.clock.advance(0)
        self.assertEqual(self.carol.deliveries, [tuple(lines)])
        self.assertEqual(self.dave.deliveries, [tuple(lines)])
        self.assertEqual(self.alice.deliveries, [(lines[2],)])
        self.assertEqual(self.bob.deliveries, [(lines[0], lines[1])])

    def test_same_tuple_for_same_view(self):
        """Recipients who see the same events get the very same tuple."""
        self.room.publish(Said("alice", "one"), exclude=self.alice)
        self.room.publish(Said("alice", "two"), exclude=self.alice)
        self.clock.advance(0)
        [bob_view], [carol_view], [dave_view] = (
            self.bob.deliveries, self.carol.deliveries, self.dave.deliveries
        )
        self.assertEqual(bob_view, (Said("alice", "one"), Said("alice", "two")))
        self.assertIs(carol_view, bob_view)
        self.assertIs(dave_view, bob_view)

    def test_next_turn_delivers_again(self):
        """Each turn has its own delivery."""
        self.room.publish(Said("alice", "one"), exclude=self.alice)
        self.clock.advance(0)
        self.room.publish(Said("alice", "two"), exclude=self.alice)
        self.clock.advance(0)
        self.assertEqual(self.bob.deliveries, [(Said("alice", "one"),), (Said("alice", "two"),)])

    def test_flush_delivers_now(self):
        """flush() hands everything out at once and cancels the scheduled flush."""
        self.room.publish(Said("alice", "hi"), exclude=self.alice)
        self.room.flush()
        self.assertEqual(self.bob.deliveries, [(Said("alice", "hi"),)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(0)
        self.assertEqual(self.bob.deliveries, [(Said("alice", "hi"),)])

    def test_mid_turn_joiner_sees_only_later_events(self):
        """Who joins mid-turn sees what happens after, not before, its join."""
        self.room.publish(Said("alice", "before"), exclude=self.alice)
        erin = self.member("erin")
        self.room.publish(Said("alice", "after"), exclude=self.alice)
        self.clock.advance(0)
        self.assertEqual(erin.deliveries, [(Said("alice", "after"),)])
        self.assertEqual(
            self.bob.deliveries,
            [(Said("alice", "before"), Joined("erin", "tcp"), Said("alice", "after"))],
        )

    def test_tell_reaches_one(self):
        """tell() reaches its one participant, in order with room events."""
        self.room.publish(Said("bob", "one"), exclude=self.bob)
        self.room.tell(self.alice, Notice("just for you"))
        self.room.publish(Said("bob", "two"), exclude=self.bob)
        self.clock.advance(0)
        self.assertEqual(
            self.alice.deliveries,
            [(Said("bob", "one"), Notice("just for you"), Said("bob", "two"))],
        )
        self.assertEqual(self.carol.deliveries, [(Said("bob", "one"), Said("bob", "two"))])

    def test_tell_before_join_is_delivered(self):
        """What a participant is told before joining in the same turn still reaches it."""
        erin = FakeParticipant(None)
        self.room.enter(erin)
        self.room.tell(erin, Notice("what is your nickname?"))
        erin.nick = "erin"
        self.room.join(erin)
        self.room.tell(erin, Notice("you are erin"))
        self.clock.advance(0)
        self.assertEqual(
            erin.events, [Notice("what is your nickname?"), Notice("you are erin")]
        )

    def test_private_reaches_recipient_only(self):
        """A private line reaches only the member it names (any case); the sender gets its copy."""
        self.room.private(self.alice, "BOB", "psst")
        self.clock.advance(0)
        self.assertEqual(self.bob.deliveries, [(Private("alice", "bob", "psst"),)])
        self.assertEqual(self.alice.deliveries, [(PrivateSent("bob", "psst"),)])
        for other in [self.carol, self.dave]:
            self.assertEqual(other.deliveries, [])

    def test_private_to_unknown(self):
        """A private line to nobody is refused with NoSuchUser."""
        with self.assertRaises(NoSuchUser) as caught:
            self.room.private(self.alice, "zed", "psst")
        self.assertEqual(str(caught.exception), "no such user: zed")
        self.clock.advance(0)
        for member in self.everyone:
            self.assertEqual(member.deliveries, [])

    def test_leave_delivers_pending_first(self):
        """A leaver gets what the turn owed it at once, and nothing after."""
        self.room.publish(Said("alice", "last words"), exclude=self.alice)
        self.room.leave(self.bob, "quit")
        self.assertEqual(self.bob.deliveries, [(Said("alice", "last words"),)])
        self.clock.advance(0)
        self.assertEqual(self.bob.deliveries, [(Said("alice", "last words"),)])
        self.assertEqual(
            self.carol.deliveries, [(Said("alice", "last words"), Left("bob", "quit"))]
        )
        self.assertEqual(self.alice.deliveries, [(Left("bob", "quit"),)])

    def test_leave_delivers_private_pending_first(self):
        """A leaver's own notices of the turn are handed over before it goes."""
        self.room.tell(self.bob, Notice("one"))
        self.room.leave(self.bob, "quit")
        self.assertEqual(self.bob.deliveries, [(Notice("one"),)])
        self.clock.advance(0)
        self.assertEqual(self.bob.deliveries, [(Notice("one"),)])

    def test_leave_of_non_member_delivers_its_notices(self):
        """A participant who never joined gets its notices and nobody hears it left."""
        erin = FakeParticipant(None)
        self.room.enter(erin)
        self.room.tell(erin, Notice("what is your nickname?"))
        self.room.leave(erin, "login timeout")
        self.assertEqual(erin.deliveries, [(Notice("what is your nickname?"),)])
        self.clock.advance(0)
        for member in self.everyone:
            self.assertEqual(member.deliveries, [])


class DeliveryFailureTests(RoomTestMixin, SynchronousTestCase):
    """A participant whose deliver() raises is dropped; the others carry on in order."""

    def setUp(self):
        super().setUp()
        self.alice = self.member("alice")
        self.mallory = self.member("mallory", kind=FailingParticipant)
        self.mallory.failing = False
        self.bob = self.member("bob")
        self.carol = self.member("carol")
        self.settle(self.alice, self.mallory, self.bob, self.carol)
        self.mallory.failing = True

    def test_failing_member_dropped(self):
        """The failing member is out of the room, closed, and the failure is logged."""
        self.room.publish(Said("carol", "hi"), exclude=self.carol)
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(DeliveryError)), 1)
        self.assertNotIn(self.mallory, self.room)
        self.assertIsNone(self.room.find("mallory"))
        self.assertEqual(self.mallory.closed, ["internal error, disconnecting"])

    def test_others_told_and_keep_order(self):
        """The others get the turn's lines, then '* X left (delivery failed)'."""
        self.room.publish(Said("carol", "one"), exclude=self.carol)
        self.room.publish(Said("carol", "two"), exclude=self.carol)
        self.clock.advance(0)
        self.clock.advance(0)
        self.flushLoggedErrors(DeliveryError)
        self.assertEqual(
            self.alice.lines(), ["carol: one", "carol: two", "* mallory left (delivery failed)"]
        )
        self.assertEqual(self.bob.events, self.alice.events)
        self.assertEqual(self.carol.lines(), ["* mallory left (delivery failed)"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SinkTests(SynchronousTestCase):
    """Sinks get room-wide events; a failing sink is logged and harms nobody."""

    def build(self, *sinks):
        self.clock = Clock()
        self.room = Room(self.clock, sinks=sinks)
        self.alice, self.bob = FakeParticipant("alice"), FakeParticipant("bob", "udp")
        for participant in [self.alice, self.bob]:
            self.room.enter(participant)
            self.room.join(participant)

    def test_room_wide_events_only(self):
        """Joins, lines, actions, renames and leaves are recorded; notices and privates not."""
        sink = RecordingSink()
        self.build(sink)
        self.room.publish(Said("alice", "hi"), exclude=self.alice)
        self.room.publish(Emote("bob", "waves"), exclude=self.bob)
        self.room.tell(self.alice, Notice("private notice"))
        self.room.private(self.alice, "bob", "psst")
        self.alice.nick = "alicia"
        self.room.rename(self.alice, "alice", "alicia")
        self.room.leave(self.bob, "quit")
        self.clock.advance(0)
        self.assertEqual(
            sink.recorded,
            [
                Joined("alice", "tcp"),
                Joined("bob", "udp"),
                Said("alice", "hi"),
                Emote("bob", "waves"),
                Renamed("alice", "alicia"),
                Left("bob", "quit"),
            ],
        )

    def test_raising_sink_is_logged_not_fatal(self):
        """A sink that raises is logged; other sinks and members still get the event."""
        sink = RecordingSink()
        self.build(RaisingSink(), sink)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 2)
        self.room.publish(Said("alice", "hi"), exclude=self.alice)
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)
        self.assertEqual(sink.recorded[-1], Said("alice", "hi"))
        self.assertEqual(self.bob.events[-1], Said("alice", "hi"))

    def test_failed_deferred_sink_is_logged_not_fatal(self):
        """A sink whose Deferred fails is logged; members still get the event."""
        self.build(FailingDeferredSink())
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 2)
        self.room.publish(Said("alice", "hi"), exclude=self.alice)
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)
        self.assertEqual(self.bob.events, [Said("alice", "hi")])


class SlowClose(FakeParticipant):
    """A participant whose close() finishes only when the test says so."""

    def close(self, reason):
        self.closed.append(reason)
        self.closing = defer.Deferred()
        return self.closing


class FailingClose(FakeParticipant):
    """A participant whose close() fails, against the contract."""

    def close(self, reason):
        self.closed.append(reason)
        return defer.fail(RuntimeError("close failed"))


class CloseAllTests(RoomTestMixin, SynchronousTestCase):
    """close_all() says goodbye to everyone connected and tells when all are gone."""

    def test_closes_joined_and_entered(self):
        """Members and participants who only entered are all closed with the reason."""
        alice = self.member("alice")
        waiting = FakeParticipant(None)
        self.room.enter(waiting)
        d = self.room.close_all("server shutting down")
        self.successResultOf(d)
        self.assertEqual(alice.closed, ["server shutting down"])
        self.assertEqual(waiting.closed, ["server shutting down"])
        self.assertTrue(self.room.closing)

    def test_flushes_before_closing(self):
        """What the turn owed is delivered before the goodbye."""
        alice, bob = self.member("alice"), self.member("bob")
        self.settle(alice, bob)
        self.room.publish(Said("alice", "bye all"), exclude=alice)
        self.room.close_all("server shutting down")
        self.assertEqual(bob.deliveries, [(Said("alice", "bye all"),)])
        self.assertEqual(bob.closed, ["server shutting down"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_leave_lines_while_closing(self):
        """On shutdown nobody sees N-1 '* X left' lines before their own notice."""
        alice, bob = self.member("alice"), self.member("bob")
        self.settle(alice, bob)
        self.room.close_all("server shutting down")
        self.room.leave(alice, "server shutting down")
        self.room.flush_to(bob)
        self.clock.advance(0)
        self.assertEqual(bob.deliveries, [])
        self.assertEqual(self.room.who(), [("bob", "tcp")])

    def test_waits_for_every_close(self):
        """The Deferred fires only once every close has finished."""
        slow = self.member("slow", kind=SlowClose)
        self.member("quick")
        d = self.room.close_all("bye")
        self.assertNoResult(d)
        slow.closing.callback(None)
        self.successResultOf(d)

    def test_never_fails(self):
        """Even a close that fails does not fail close_all."""
        self.member("broken", kind=FailingClose)
        alice = self.member("alice")
        d = self.room.close_all("bye")
        self.successResultOf(d)
        self.assertEqual(alice.closed, ["bye"])

    def test_exited_not_closed(self):
        """Who has exited is not closed again."""
        alice = self.member("alice")
        self.room.leave(alice, "quit")
        self.room.exit(alice)
        self.assertEqual(self.room.connected, 0)
        self.successResultOf(self.room.close_all("bye"))
        self.assertEqual(alice.closed, [])
