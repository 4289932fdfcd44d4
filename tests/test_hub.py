"""
Tests for L{chatservice.core.hub}: rooms (join, part, names, limits, empty rooms), renames and
quits shown once, private messages across rooms, the end-of-turn fan-out (one deliver per user
per turn, publication order across rooms, sliced views, joins and parts within a turn), failing
deliveries, sinks, shutdown, message ids on events, and history replay against live lines.
"""

import dataclasses

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatservice.core.commands import Join
from chatservice.core.errors import (
    InvalidRoom,
    NoSuchRoom,
    NoSuchUser,
    NotInRoom,
    TooManyRooms,
    Unavailable,
)
from chatservice.core.events import (
    STORED_EVENTS,
    Emote,
    HistoryEnd,
    HistoryStart,
    Joined,
    Left,
    Notice,
    Parted,
    Private,
    PrivateSent,
    Refusal,
    Renamed,
    Replayed,
    RoomJoined,
    RoomList,
    Said,
    TopicChanged,
)
from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import REPLAY_TIMEOUT, RESUME_MAX, Hub
from chatservice.core.interfaces import IEventSink, IHistoryStore, IParticipant
from chatservice.core.limits import Limits
from chatservice.core.nicks import NickRegistry
from chatservice.core.session import Session
from tests.fakes import (
    DeliveryError,
    FailingDeferredSink,
    FailingParticipant,
    FakeHistory,
    FakeParticipant,
    RaisingSink,
    RecordingSink,
    SinkError,
    StoreError,
)

#: A time in 2025: ids are then positive and times look like today's.
START = 1_750_000_000.0


def bare(event):
    """C{event} with its id and time zeroed (and those of a replayed event), to compare shapes."""
    if type(event) is Replayed:
        return Replayed(bare(event.event), 0.0)
    fields = {field.name for field in dataclasses.fields(event)}
    if "id" in fields:
        return dataclasses.replace(event, id=0, time=0.0)
    return event


def bares(events) -> list:
    return [bare(event) for event in events]


def texts(participant) -> list:
    """The text of every line (Said) delivered to C{participant}, in order."""
    return [event.text for event in participant.events if type(event) is Said]


def said(room, nick, text):
    return Said(0, 0.0, room, nick, text)


def joined(room, nick, via="tcp"):
    return Joined(0, 0.0, room, nick, via)


def parted(room, nick, reason=""):
    return Parted(0, 0.0, room, nick, reason)


def renamed(rooms, old, new):
    return Renamed(0, 0.0, tuple(rooms), old, new)


def left(rooms, nick, reason):
    return Left(0, 0.0, tuple(rooms), nick, reason)


def replayed(event):
    return Replayed(bare(event), 0.0)


class HubTestMixin:
    """A hub on a fake clock, and people connected to it through sessions."""

    sinks = ()
    limits = Limits(flood=FloodPolicy(rate=0, burst=0))
    history_mode = None  # a FakeHistory mode, or None for no history
    replay = 20

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.registry = NickRegistry()
        self.store = FakeHistory(self.history_mode) if self.history_mode else None
        self.hub = Hub(self.clock, limits=self.limits, history=self.store,
                       replay=self.replay, sinks=self.sinks)

    def connect(self, nick, *rooms, via="tcp", kind=FakeParticipant):
        """A user called C{nick}, in #lobby and then C{rooms} (joined with /join)."""
        participant = kind(None, via)
        participant.session = Session(participant, self.hub, self.registry, self.clock,
                                      self.limits)
        participant.session.start(nick)
        for room in rooms:
            participant.session.handle(f"/join {room}")
        return participant

    def settle(self, *participants):
        """Finish the turn and forget what it delivered."""
        self.clock.advance(0)
        for participant in participants:
            participant.clear()

    def room(self, name):
        return self.hub.room(name)

    def say(self, participant, room, text):
        self.hub.say(participant, self.room(room), text)


class FakesTests(SynchronousTestCase):
    """The fakes honour the interfaces they claim."""

    def test_participants(self):
        """FakeParticipant and FailingParticipant provide IParticipant."""
        self.assertTrue(verifyObject(IParticipant, FakeParticipant("alice")))
        self.assertTrue(verifyObject(IParticipant, FailingParticipant("bob")))

    def test_sinks_and_store(self):
        """The fake sinks provide IEventSink; FakeHistory provides IHistoryStore."""
        for sink in [RecordingSink(), RaisingSink(), FailingDeferredSink()]:
            self.assertTrue(verifyObject(IEventSink, sink))
        self.assertTrue(verifyObject(IHistoryStore, FakeHistory()))


# -- rooms -----------------------------------------------------------------------


class RoomTests(HubTestMixin, SynchronousTestCase):
    """Joining creates, parting leaves; the default room stays, empty ones go."""

    def test_everyone_lands_in_default_room(self):
        """A user who has a nick is in #lobby, found by any case of its nick."""
        alice = self.connect("alice")
        self.assertEqual(self.hub.rooms_of(alice), [self.hub.default_room])
        self.assertIn(alice, self.hub.default_room)
        self.assertIs(self.hub.find("ALICE"), alice)
        self.assertEqual(alice.room, "#lobby")

    def test_default_room_is_configurable(self):
        """The default room is whatever the hub was given, and checked."""
        hub = Hub(self.clock, default_room="#Main")
        self.assertEqual(hub.rooms(), (("#Main", 0, ""),))
        self.assertRaises(ValueError, Hub, self.clock, default_room="lobby")

    def test_join_creates(self):
        """Joining a room that does not exist creates it under the joiner's spelling."""
        alice = self.connect("alice")
        room = self.hub.join(alice, "#Dev")
        self.assertEqual(room.name, "#Dev")
        self.assertEqual(room.key, "#dev")
        self.assertEqual(self.hub.rooms(), (("#Dev", 1, ""), ("#lobby", 1, "")))
        self.assertEqual(self.hub.rooms_of(alice), [self.hub.default_room, room])
        self.assertEqual(self.hub.who(room), (("alice", "tcp"),))

    def test_join_shown_to_members_not_joiner(self):
        """The members see '* bob joined'; the joiner gets its RoomJoined reply instead."""
        alice = self.connect("alice", "#dev")
        bob = self.connect("bob")
        self.settle(alice, bob)
        bob.session.handle("/join #dev")
        self.clock.advance(0)
        self.assertEqual(bares(alice.events), [joined("#dev", "bob")])
        self.assertEqual(alice.lines(), ["* bob joined"])
        self.assertEqual(bob.events, [RoomJoined("#dev", "", 2, ("alice", "bob"))])

    def test_join_twice_is_one_membership(self):
        """Joining a room one is in changes nothing and tells nobody."""
        alice = self.connect("alice", "#dev")
        bob = self.connect("bob", "#dev")
        self.settle(alice, bob)
        self.assertIs(self.hub.join(bob, "#DEV"), self.room("#dev"))
        self.clock.advance(0)
        self.assertEqual(alice.events, [])
        self.assertEqual(len(self.room("#dev")), 2)

    def test_who_in_joining_order(self):
        """who() lists (nick, via) in the order people joined, renames keep their place."""
        self.connect("carol", "#dev", via="udp")
        alice = self.connect("alice", "#dev")
        self.connect("bob", "#dev", via="udp")
        alice.session.handle("/nick alicia")
        self.assertEqual(
            self.hub.who(self.room("#dev")), (("carol", "udp"), ("alicia", "tcp"), ("bob", "udp"))
        )

    def test_part_shown_to_others(self):
        """The others see the part with its reason; the one who parts does not."""
        alice = self.connect("alice", "#dev")
        bob = self.connect("bob", "#dev")
        self.settle(alice, bob)
        self.hub.part(bob, self.room("#dev"), "lunch")
        self.clock.advance(0)
        self.assertEqual(bares(alice.events), [parted("#dev", "bob", "lunch")])
        self.assertEqual(alice.lines(), ["* bob left the room (lunch)"])
        self.assertEqual(bob.events, [])
        self.assertNotIn(bob, self.room("#dev"))
        self.assertEqual(self.hub.rooms_of(bob), [self.hub.default_room])

    def test_part_not_member(self):
        """Parting a room one is not in is refused."""
        self.connect("alice", "#dev")
        bob = self.connect("bob")
        self.assertRaises(NotInRoom, self.hub.part, bob, self.room("#dev"), "")
        self.assertEqual(self.hub.who(self.room("#dev")), (("alice", "tcp"),))

    def test_part_unknown_room_refused(self):
        """/part of a room that does not exist is a no-such-room refusal."""
        alice = self.connect("alice")
        self.settle(alice)
        alice.session.handle("/part #nowhere")
        self.clock.advance(0)
        self.assertEqual(alice.events, [Refusal("no-such-room", "no such room: #nowhere")])

    def test_empty_room_disappears(self):
        """A room other than the default one goes from rooms() when its last member parts."""
        alice = self.connect("alice", "#dev")
        self.hub.part(alice, self.room("#dev"), "")
        self.assertEqual(self.hub.rooms(), (("#lobby", 1, ""),))
        self.assertRaises(NoSuchRoom, self.hub.room, "#dev")

    def test_empty_room_disappears_when_last_member_quits(self):
        """A quit empties a room just as well as a part."""
        alice = self.connect("alice", "#dev")
        self.connect("bob")
        alice.session.handle("/quit")
        self.assertEqual(self.hub.rooms(), (("#lobby", 1, ""),))

    def test_room_lookup_follows_rooms_that_go_and_come_back(self):
        """room() remembers spellings it was asked for, but never answers with a room that
        is gone: after the last member parts it is NoSuchRoom, then the room made again."""
        alice = self.connect("alice", "#dev")
        first = self.hub.room("#Dev")
        self.assertIs(self.hub.room("#Dev"), first)
        self.hub.part(alice, first, "")
        self.assertRaises(NoSuchRoom, self.hub.room, "#Dev")
        again = self.hub.join(alice, "#dev")
        self.assertIsNot(again, first)
        self.assertIs(self.hub.room("#Dev"), again)
        self.assertRaises(InvalidRoom, self.hub.room, "#bad name")

    def test_room_made_again_is_new(self):
        """A room that disappeared comes back empty of topic, under its new creator's spelling."""
        alice = self.connect("alice", "#dev")
        self.hub.set_topic(alice, self.room("#dev"), "old topic")
        self.hub.part(alice, self.room("#dev"), "")
        room = self.hub.join(alice, "#DEV")
        self.assertEqual((room.name, room.topic), ("#DEV", ""))

    def test_default_room_never_disappears(self):
        """Everyone may leave the default room; it stays, with nobody in it."""
        alice = self.connect("alice", "#dev")
        self.hub.part(alice, self.hub.default_room, "")
        self.assertEqual(self.hub.rooms(), (("#dev", 1, ""), ("#lobby", 0, "")))
        alice.session.handle("/quit")
        self.assertEqual(self.hub.rooms(), (("#lobby", 0, ""),))
        self.assertIs(self.hub.room("#LOBBY"), self.hub.default_room)

    def test_rooms_listed_by_name(self):
        """/rooms answers every room with its member count and topic, by folded name."""
        alice = self.connect("alice", "#b", "#A")
        self.connect("bob", "#b")
        self.hub.set_topic(alice, self.room("#b"), "bees")
        self.settle(alice)
        alice.session.handle("/rooms")
        self.clock.advance(0)
        self.assertEqual(
            alice.events, [RoomList((("#A", 1, ""), ("#b", 2, "bees"), ("#lobby", 2, "")))]
        )

    def test_topic_shown_to_members_setter_included(self):
        """A topic change reaches every member of the room, the setter too, nobody else."""
        alice = self.connect("alice", "#dev")
        bob = self.connect("bob", "#dev")
        carol = self.connect("carol")
        self.settle(alice, bob, carol)
        self.hub.set_topic(alice, self.room("#dev"), "ship it")
        self.clock.advance(0)
        event = TopicChanged(0, 0.0, "#dev", "alice", "ship it")
        self.assertEqual(bares(alice.events), [event])
        self.assertEqual(bares(bob.events), [event])
        self.assertEqual(carol.events, [])
        self.assertEqual(self.room("#dev").topic_by, "alice")
        self.assertEqual(self.room("#dev").topic_time, START)
        self.assertRaises(NotInRoom, self.hub.set_topic, carol, self.room("#dev"), "mine")


class RoomNameTests(HubTestMixin, SynchronousTestCase):
    """A room name is # and 1 to 50 of [A-Za-z0-9-_.], compared with ASCII folding."""

    def setUp(self):
        super().setUp()
        self.alice = self.connect("alice")

    def test_valid_names(self):
        """The shortest, the longest and every allowed character are rooms."""
        for name in ["#a", "#" + "x" * 50, "#AZaz09-_.", "#-", "#.", "#_", "#9"]:
            self.assertEqual(self.hub.join(self.alice, name).name, name)
            self.hub.part(self.alice, self.room(name), "")

    def test_invalid_names(self):
        """Anything else is refused with InvalidRoom, and nothing is created."""
        for name in ["", "#", "dev", "&dev", "##", "#" + "x" * 51, "#a b", "#a,b", "#a:b",
                     "#caf\u00e9", "#\u212aate", "#a\x00", "#a\t", " #a", "#a ", "#dev!"]:
            self.assertRaises(InvalidRoom, self.hub.join, self.alice, name)
            self.assertRaises(InvalidRoom, self.hub.room, name)
        self.assertEqual(self.hub.rooms(), (("#lobby", 1, ""),))

    def test_invalid_name_refused_by_session(self):
        """/join of a bad name is a refusal with its kind, and says what a name may be."""
        self.settle(self.alice)
        self.alice.session.handle("/join dev")
        self.alice.session.handle("/join #caf\u00e9")
        self.clock.advance(0)
        self.assertEqual(self.alice.events, [
            Refusal("invalid-room", "not a room name: dev (# and 1 to 50 letters, digits or -_.)"),
            Refusal("invalid-room",
                    "not a room name: #caf\u00e9 (# and 1 to 50 letters, digits or -_.)"),
        ])
        self.assertEqual(self.alice.room, "#lobby")

    def test_ascii_folding(self):
        """#Dev, #dev and #DEV are one room, kept under its first spelling."""
        bob = self.connect("bob")
        room = self.hub.join(self.alice, "#Dev")
        self.assertIs(self.hub.join(bob, "#dev"), room)
        self.assertIs(self.hub.room("#DEV"), room)
        self.assertEqual(self.hub.rooms(), (("#Dev", 2, ""), ("#lobby", 2, "")))

    def test_folding_is_ascii_only(self):
        """Only A-Z fold: #k is not #\u212a (which is no room name anyway)."""
        self.hub.join(self.alice, "#k")
        self.assertRaises(InvalidRoom, self.hub.room, "#\u212a")
        self.assertIs(self.hub.room("#K"), self.room("#k"))


class RoomLimitTests(HubTestMixin, SynchronousTestCase):
    """--max-rooms-per-user and --max-rooms."""

    limits = Limits(flood=FloodPolicy(rate=0, burst=0), max_rooms=4, max_rooms_per_user=3)

    def test_per_user(self):
        """A user in max_rooms_per_user rooms may join no other, but may rejoin its own."""
        alice = self.connect("alice", "#a", "#b")
        self.assertRaises(TooManyRooms, self.hub.join, alice, "#c")
        self.assertEqual(len(self.hub.rooms_of(alice)), 3)
        self.assertIs(self.hub.join(alice, "#A"), self.room("#a"))
        bob = self.connect("bob", "#a")
        self.hub.part(alice, self.room("#a"), "")
        self.assertIs(self.hub.join(alice, "#a"), self.room("#a"))
        self.assertIn(bob, self.room("#a"))

    def test_per_user_refused_by_session(self):
        """On the line protocols the refusal is a '! ' line with kind too-many-rooms."""
        alice = self.connect("alice", "#a", "#b")
        self.settle(alice)
        alice.session.handle("/join #c")
        self.clock.advance(0)
        self.assertEqual(alice.events, [Refusal(
            "too-many-rooms", "you are in 3 rooms, the most allowed: /part one first"
        )])
        self.assertEqual(alice.lines(), ["! you are in 3 rooms, the most allowed: /part one first"])
        self.assertEqual(alice.room, "#b")

    def test_service_wide(self):
        """The service holds at most max_rooms rooms (#lobby counted); existing ones stay open."""
        alice = self.connect("alice", "#a", "#b")
        bob = self.connect("bob", "#c")
        self.assertRaises(TooManyRooms, self.hub.join, bob, "#d")
        self.assertEqual(len(self.hub.rooms()), 4)
        self.assertIs(self.hub.join(bob, "#a"), self.room("#a"))
        self.hub.part(alice, self.room("#b"), "")  # #b empties and goes
        self.assertEqual(self.hub.join(alice, "#d").name, "#d")

    def test_service_wide_refused_by_session(self):
        """The refusal says how many rooms the server holds."""
        self.connect("alice", "#a", "#b")
        bob = self.connect("bob", "#c")
        self.settle(bob)
        bob.session.handle("/join #d")
        self.clock.advance(0)
        self.assertEqual([(event.kind, event.text) for event in bob.events], [(
            "too-many-rooms",
            "the server holds 4 rooms, the most allowed: join an existing one (/rooms)",
        )])


class RenameAndQuitTests(HubTestMixin, SynchronousTestCase):
    """A rename or a quit is shown once to each user sharing at least one room."""

    def setUp(self):
        super().setUp()
        self.alice = self.connect("alice", "#dev")  # #lobby and #dev
        self.bob = self.connect("bob", "#dev")  # shares both rooms with alice
        self.carol = self.connect("carol", "#dev")
        self.hub.part(self.carol, self.hub.default_room, "")  # shares #dev only
        self.dave = self.connect("dave")  # shares #lobby only
        self.erin = self.connect("erin", "#ops")
        self.hub.part(self.erin, self.hub.default_room, "")  # shares nothing
        self.everyone = [self.alice, self.bob, self.carol, self.dave, self.erin]
        self.settle(*self.everyone)

    def test_rename_once_to_each(self):
        """Everyone sharing a room sees the rename once, the renamer too; others not at all."""
        self.alice.session.handle("/nick alicia")
        self.clock.advance(0)
        event = renamed(["#lobby", "#dev"], "alice", "alicia")
        for member in [self.alice, self.bob, self.carol, self.dave]:
            self.assertEqual(bares(member.events), [event])
            self.assertEqual(len(member.deliveries), 1)
        self.assertEqual(self.erin.events, [])
        self.assertEqual(self.bob.lines(), ["* alice is now known as alicia"])

    def test_rename_in_one_room_seen_by_renamer(self):
        """A user in one room sees its own rename, as its room does."""
        self.dave.session.handle("/nick david")
        self.clock.advance(0)
        event = renamed(["#lobby"], "dave", "david")
        for member in [self.alice, self.bob, self.dave]:
            self.assertEqual(bares(member.events), [event])
        self.assertEqual(self.carol.events, [])
        self.assertEqual(self.erin.events, [])

    def test_rename_in_no_room_seen_by_renamer_only(self):
        """Who is in no room still sees its own rename."""
        self.hub.part(self.erin, self.room("#ops"), "")
        self.erin.session.handle("/nick erina")
        self.clock.advance(0)
        self.assertEqual(bares(self.erin.events), [renamed([], "erin", "erina")])
        for member in [self.alice, self.bob, self.carol, self.dave]:
            self.assertEqual(member.events, [])

    def test_rename_rekeys_directory(self):
        """After a rename the user is found by its new nick only."""
        self.alice.session.handle("/nick Alicia")
        self.assertIs(self.hub.find("alicia"), self.alice)
        self.assertIsNone(self.hub.find("alice"))

    def test_quit_once_to_each(self):
        """A quit is shown once to everyone who shared a room; the quitter sees it not."""
        self.alice.session.handle("/quit off to bed")
        self.clock.advance(0)
        event = left(["#lobby", "#dev"], "alice", "off to bed")
        for member in [self.bob, self.carol, self.dave]:
            self.assertEqual(bares(member.events), [event])
        self.assertEqual(self.bob.lines(), ["* alice left (off to bed)"])
        self.assertEqual(self.erin.events, [])
        self.assertEqual(bares(self.alice.events), [])
        self.assertEqual(self.alice.closed, ["goodbye"])

    def test_quit_leaves_every_room(self):
        """/quit leaves every room and the directory; an emptied room disappears."""
        self.erin.session.handle("/quit")
        self.alice.session.handle("/quit")
        for room in self.hub.rooms_of(self.bob):
            self.assertNotIn(self.alice, room)
        self.assertEqual(self.hub.rooms_of(self.alice), [])
        self.assertIsNone(self.hub.find("alice"))
        self.assertEqual(self.hub.rooms(), (("#dev", 2, ""), ("#lobby", 2, "")))
        self.assertEqual(self.hub.who(self.room("#dev")), (("bob", "tcp"), ("carol", "tcp")))

    def test_quit_in_one_room(self):
        """A user in one room leaves it; its members see it once."""
        self.dave.session.handle("/quit")
        self.clock.advance(0)
        for member in [self.alice, self.bob]:
            self.assertEqual(bares(member.events), [left(["#lobby"], "dave", "quit")])
        self.assertEqual(self.carol.events, [])

    def test_quit_from_no_room_shown_to_nobody(self):
        """Who parted every room quits unseen (the history still hears of it)."""
        self.hub.part(self.erin, self.room("#ops"), "")
        self.erin.session.handle("/quit")
        self.clock.advance(0)
        for member in [self.alice, self.bob, self.carol, self.dave]:
            self.assertEqual(member.events, [])


class PrivateTests(HubTestMixin, SynchronousTestCase):
    """Private messages go user to user, whatever rooms they are in."""

    def test_across_rooms(self):
        """Two users sharing no room still reach each other; both copies carry one id."""
        alice = self.connect("alice", "#a")
        bob = self.connect("bob", "#b")
        self.hub.part(alice, self.hub.default_room, "")
        self.hub.part(bob, self.hub.default_room, "")
        self.settle(alice, bob)
        self.hub.private(alice, "BOB", "psst")
        self.clock.advance(0)
        [received] = bob.events
        [sent] = alice.events
        self.assertEqual(bare(received), Private(0, 0.0, "alice", "bob", "psst"))
        self.assertEqual(bare(sent), PrivateSent(0, 0.0, "bob", "psst"))
        self.assertEqual((received.id, received.time), (sent.id, sent.time))
        self.assertEqual(bob.lines(), ["[private] alice: psst"])

    def test_to_nobody(self):
        """A private line to nobody is refused with NoSuchUser, and nothing is sent."""
        alice = self.connect("alice")
        bob = self.connect("bob")
        self.settle(alice, bob)
        with self.assertRaises(NoSuchUser) as caught:
            self.hub.private(alice, "zed", "psst")
        self.assertEqual(str(caught.exception), "no such user: zed")
        self.clock.advance(0)
        self.assertEqual((alice.events, bob.events), ([], []))

    def test_reaches_user_in_no_room(self):
        """A user in no room still gets private messages."""
        alice = self.connect("alice")
        bob = self.connect("bob")
        self.hub.part(bob, self.hub.default_room, "")
        self.settle(alice, bob)
        self.hub.private(alice, "bob", "still there?")
        self.clock.advance(0)
        self.assertEqual([type(event) for event in bob.events], [Private])


# -- the end of the turn -----------------------------------------------------------


class FanOutTests(HubTestMixin, SynchronousTestCase):
    """Events are collected during a turn and handed out once at its end."""

    def setUp(self):
        super().setUp()
        self.alice, self.bob, self.carol, self.dave = (
            self.connect(nick) for nick in ["alice", "bob", "carol", "dave"]
        )
        self.lobby = self.hub.default_room
        self.everyone = [self.alice, self.bob, self.carol, self.dave]
        self.settle(*self.everyone)

    def test_nothing_before_end_of_turn(self):
        """Publishing schedules one flush and delivers nothing yet."""
        self.hub.say(self.alice, self.lobby, "one")
        self.hub.say(self.alice, self.lobby, "two")
        self.assertEqual(self.bob.deliveries, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_say_goes_to_all_but_sender(self):
        """A line goes to every member but its sender."""
        self.hub.say(self.alice, self.lobby, "hi")
        self.clock.advance(0)
        for other in [self.bob, self.carol, self.dave]:
            self.assertEqual(bares(other.events), [said("#lobby", "alice", "hi")])
            self.assertEqual(other.lines(), ["alice: hi"])
        self.assertEqual(self.alice.deliveries, [])

    def test_one_deliver_per_turn(self):
        """Everything from one turn reaches each recipient in one call, in order."""
        self.hub.say(self.alice, self.lobby, "one")
        self.hub.emote(self.alice, self.lobby, "waves")
        self.hub.say(self.bob, self.lobby, "two")
        self.clock.advance(0)
        lines = [
            said("#lobby", "alice", "one"),
            Emote(0, 0.0, "#lobby", "alice", "waves"),
            said("#lobby", "bob", "two"),
        ]
        for member in [self.carol, self.dave]:
            self.assertEqual(len(member.deliveries), 1)
            self.assertEqual(bares(member.events), lines)
        self.assertEqual(bares(self.alice.events), lines[2:])
        self.assertEqual(bares(self.bob.events), lines[:2])

    def test_same_batch_for_same_view(self):
        """Recipients who see the same events get the very same batch."""
        self.hub.say(self.alice, self.lobby, "one")
        self.hub.say(self.alice, self.lobby, "two")
        self.clock.advance(0)
        [bob_view], [carol_view], [dave_view] = (
            self.bob.deliveries, self.carol.deliveries, self.dave.deliveries
        )
        self.assertEqual(texts(self.bob), ["one", "two"])
        self.assertIs(carol_view, bob_view)
        self.assertIs(dave_view, bob_view)

    def test_next_turn_delivers_again(self):
        """Each turn has its own delivery."""
        self.hub.say(self.alice, self.lobby, "one")
        self.clock.advance(0)
        self.hub.say(self.alice, self.lobby, "two")
        self.clock.advance(0)
        self.assertEqual([[event.text for event in batch] for batch in self.bob.deliveries],
                         [["one"], ["two"]])

    def test_flush_delivers_now(self):
        """flush() hands everything out at once and cancels the scheduled flush."""
        self.hub.say(self.alice, self.lobby, "hi")
        self.hub.flush()
        self.assertEqual(texts(self.bob), ["hi"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(0)
        self.assertEqual(len(self.bob.deliveries), 1)

    def test_tell_reaches_one_in_order(self):
        """tell() reaches its one participant, in order with room events."""
        self.hub.say(self.bob, self.lobby, "one")
        self.hub.tell(self.alice, Notice("just for you"))
        self.hub.say(self.bob, self.lobby, "two")
        self.clock.advance(0)
        self.assertEqual(
            bares(self.alice.events),
            [said("#lobby", "bob", "one"), Notice("just for you"), said("#lobby", "bob", "two")],
        )
        self.assertEqual(texts(self.carol), ["one", "two"])
        self.assertEqual(len(self.alice.deliveries), 1)

    def test_tell_before_join_is_delivered(self):
        """What a participant is told before it has a nick, in the same turn, still reaches it."""
        erin = FakeParticipant(None)
        session = Session(erin, self.hub, self.registry, self.clock, self.limits)
        session.start()
        session.handle("erin")
        self.clock.advance(0)
        self.assertEqual(len(erin.deliveries), 1)
        self.assertEqual(erin.lines(), [
            "* welcome to chatroom, what is your nickname?",
            "* you are erin; 5 in #lobby: alice, bob, carol, dave, erin",
            "* type /help for commands",
        ])

    def test_leave_delivers_pending_first(self):
        """A leaver gets what the turn owed it before its goodbye, and nothing after."""
        self.hub.say(self.alice, self.lobby, "last words")
        self.bob.session.handle("/quit")
        self.assertEqual(texts(self.bob), ["last words"])
        self.assertEqual(self.bob.closed, ["goodbye"])
        self.clock.advance(0)
        self.assertEqual(len(self.bob.deliveries), 1)
        self.assertEqual(
            bares(self.carol.events),
            [said("#lobby", "alice", "last words"), left(["#lobby"], "bob", "quit")],
        )
        self.assertEqual(bares(self.alice.events), [left(["#lobby"], "bob", "quit")])

    def test_goodbye_after_what_was_owed(self):
        """flush_to runs before close: the goodbye comes after the turn's lines."""
        order = []
        self.bob.deliver = lambda batch: order.append(("deliver", [e.text for e in batch]))
        self.bob.close = lambda reason: order.append(("close", reason)) or defer.succeed(None)
        self.hub.say(self.alice, self.lobby, "wait")
        self.bob.session.handle("/quit")
        self.assertEqual(order, [("deliver", ["wait"]), ("close", "goodbye")])

    def test_leave_delivers_own_notices_first(self):
        """A leaver's own notices of the turn are handed over before it goes."""
        self.hub.tell(self.bob, Notice("one"))
        self.bob.session.end("quit")
        self.assertEqual(self.bob.events, [Notice("one")])
        self.clock.advance(0)
        self.assertEqual(self.bob.events, [Notice("one")])

    def test_leave_of_non_member_delivers_its_notices(self):
        """A user who never chose a nick gets its notices and nobody hears it left."""
        erin = FakeParticipant(None)
        session = Session(erin, self.hub, self.registry, self.clock, self.limits)
        session.start()
        session.end("login timeout")
        self.assertEqual(erin.lines(), ["* welcome to chatroom, what is your nickname?"])
        self.clock.advance(0)
        for member in self.everyone:
            self.assertEqual(member.deliveries, [])
        self.assertEqual(self.hub.connected, 4)


class BatchingAcrossRoomsTests(HubTestMixin, SynchronousTestCase):
    """One deliver per user per turn, whatever its rooms, in publication order."""

    ROOMS = ["#a", "#b", "#c", "#d"]

    def setUp(self):
        super().setUp()
        self.alice = self.connect("alice", *self.ROOMS)  # five rooms with #lobby
        self.talkers = [self.connect(f"t{i}", room) for i, room in enumerate(self.ROOMS)]
        self.settle(self.alice, *self.talkers)

    def test_one_deliver_in_five_rooms(self):
        """Lines from five rooms, privates and replies reach alice in one call, in order."""
        names = ["#lobby"] + self.ROOMS
        expected = []
        for round_ in range(2):
            for talker, name in zip(self.talkers + [self.talkers[0]], names[1:] + ["#lobby"]):
                text = f"{talker.nick} {round_} in {name}"
                self.say(talker, name, text)
                expected.append(text)
            self.hub.private(self.talkers[1], "alice", f"psst {round_}")
            self.hub.tell(self.alice, Notice(f"notice {round_}"))
            expected += [f"psst {round_}", f"notice {round_}"]
        self.clock.advance(0)
        self.assertEqual(len(self.alice.deliveries), 1)
        shown = [getattr(event, "text", None) for event in self.alice.events]
        self.assertEqual(shown, expected)
        ids = [event.id for event in self.alice.events if hasattr(event, "id")]
        self.assertEqual(ids, sorted(ids))

    def test_room_marks(self):
        """Lines from the current room look as always; the others carry their room."""
        self.say(self.talkers[0], "#a", "in a")
        self.say(self.talkers[3], "#d", "in d")
        self.clock.advance(0)
        self.assertEqual(self.alice.room, "#d")
        self.assertEqual(self.alice.lines(), ["[#a] t0: in a", "t3: in d"])

    def test_members_of_the_same_rooms_share_a_run(self):
        """Two users in the same rooms, joined in the same order, share one merged run."""
        bob = self.connect("bob", *self.ROOMS)
        self.settle(self.alice, bob, *self.talkers)
        self.say(self.talkers[0], "#a", "one")
        self.say(self.talkers[2], "#c", "two")
        self.clock.advance(0)
        [(bob_run, *bob_slice)] = bob.deliveries[0].parts
        [(alice_run, *alice_slice)] = self.alice.deliveries[0].parts
        self.assertIs(bob_run, alice_run)
        self.assertEqual((bob_slice, alice_slice), ([0, 2], [0, 2]))
        self.assertEqual(texts(bob), ["one", "two"])

    def test_sender_view_is_slices_of_the_shared_run(self):
        """
        A sender's view leaves out its own lines and is built of slices of the very run its
        room mates get: as many parts as its own lines cut, whatever the turn's size.
        """
        bob = self.connect("bob", "#a")
        self.settle(self.alice, bob, *self.talkers)
        a = self.room("#a")
        for i in range(50):
            self.hub.say(self.talkers[0], a, f"t0 {i}")
            if i in (10, 30):
                self.hub.say(bob, a, f"bob {i}")
        self.clock.advance(0)
        [(run, *whole)] = self.alice.deliveries[0].parts  # a listener: the room's whole run
        self.assertEqual(whole, [0, 52])
        [bob_view] = bob.deliveries
        [t0_view] = self.talkers[0].deliveries
        self.assertEqual(texts(bob), [f"t0 {i}" for i in range(50)])
        self.assertEqual(texts(self.talkers[0]), ["bob 10", "bob 30"])
        self.assertEqual([(shared, start, stop) for shared, start, stop in bob_view.parts],
                         [(run, 0, 11), (run, 12, 32), (run, 33, 52)])
        self.assertEqual([(shared, start, stop) for shared, start, stop in t0_view.parts],
                         [(run, 11, 12), (run, 32, 33)])

    def test_sender_view_shares_with_a_listener(self):
        """A sender's batch parts reference the same Shared as a listener's batch."""
        bob = self.connect("bob", "#a")
        carol = self.connect("carol", "#a")
        self.hub.part(bob, self.hub.default_room, "")
        self.hub.part(carol, self.hub.default_room, "")
        self.settle(self.alice, bob, carol, *self.talkers)
        a = self.room("#a")
        self.hub.say(carol, a, "c1")
        self.hub.say(bob, a, "b1")
        self.hub.say(carol, a, "c2")
        self.clock.advance(0)
        [listener] = self.talkers[0].deliveries
        [bob_view] = bob.deliveries
        self.assertEqual(len(listener.parts), 1)
        self.assertEqual(texts(bob), ["c1", "c2"])
        self.assertEqual([part[0] for part in bob_view.parts],
                         [listener.parts[0][0]] * len(bob_view.parts))
        self.assertEqual([(start, stop) for _, start, stop in bob_view.parts], [(0, 1), (2, 3)])

    def test_multi_room_sender_shares_the_merged_run(self):
        """A sender in several rooms is cut from the run its room mates in those rooms get."""
        bob = self.connect("bob", *self.ROOMS)
        self.settle(self.alice, bob, *self.talkers)
        self.say(self.talkers[0], "#a", "one")
        self.say(bob, "#b", "mine")
        self.say(self.talkers[2], "#c", "two")
        self.clock.advance(0)
        [alice_view] = self.alice.deliveries
        [bob_view] = bob.deliveries
        self.assertEqual(texts(self.alice), ["one", "mine", "two"])
        self.assertEqual(texts(bob), ["one", "two"])
        self.assertEqual({part[0] for part in bob_view.parts}, {alice_view.parts[0][0]})

    def test_mid_turn_join_sees_what_follows(self):
        """Who joins a room mid-turn sees what happens there after its join, not before."""
        bob = self.connect("bob")
        self.settle(self.alice, bob, *self.talkers)
        self.say(self.talkers[0], "#a", "before")
        self.hub.join(bob, "#a")
        self.say(self.talkers[0], "#a", "after")
        self.say(self.alice, "#lobby", "lobby")
        self.clock.advance(0)
        self.assertEqual(len(bob.deliveries), 1)
        self.assertEqual(texts(bob), ["after", "lobby"])
        self.assertEqual(
            bares(self.alice.events),
            [said("#a", "t0", "before"), joined("#a", "bob"), said("#a", "t0", "after")],
        )

    def test_mid_turn_part_sees_what_came_before(self):
        """Who parts a room mid-turn sees what happened there before, not after."""
        self.say(self.talkers[0], "#a", "before")
        self.hub.part(self.alice, self.room("#a"), "bye")
        self.say(self.talkers[0], "#a", "after")
        self.say(self.talkers[1], "#b", "elsewhere")
        self.clock.advance(0)
        self.assertEqual(texts(self.alice), ["before", "elsewhere"])
        self.assertEqual(bares(self.talkers[0].events), [parted("#a", "alice", "bye")])

    def test_mid_turn_join_then_part(self):
        """Join and part in one turn: only what happened in between is seen."""
        bob = self.connect("bob")
        self.settle(bob, *self.talkers)
        self.say(self.talkers[0], "#a", "one")
        self.hub.join(bob, "#a")
        self.say(self.talkers[0], "#a", "two")
        self.hub.part(bob, self.room("#a"), "")
        self.say(self.talkers[0], "#a", "three")
        self.clock.advance(0)
        self.assertEqual(texts(bob), ["two"])
        self.assertEqual(
            bares(self.talkers[0].events), [joined("#a", "bob"), parted("#a", "bob")]
        )

    def test_mid_turn_part_then_join(self):
        """Part and join again in one turn: everything but what happened while out."""
        self.say(self.talkers[0], "#a", "one")
        self.hub.part(self.alice, self.room("#a"), "")
        self.say(self.talkers[0], "#a", "two")
        self.hub.join(self.alice, "#a")
        self.say(self.talkers[0], "#a", "three")
        self.clock.advance(0)
        self.assertEqual(texts(self.alice), ["one", "three"])

    def test_mid_turn_join_of_new_room(self):
        """A room created mid-turn works like any: its creator sees what follows."""
        bob = self.connect("bob")
        self.settle(self.alice, bob)
        self.hub.join(self.alice, "#new")
        self.hub.join(bob, "#new")
        self.say(bob, "#new", "first")
        self.clock.advance(0)
        self.assertEqual(
            bares(self.alice.events), [joined("#new", "bob"), said("#new", "bob", "first")]
        )

    def test_depart_hands_over_what_was_owed(self):
        """A user leaving mid-turn gets the lines of all its rooms so far, then the goodbye."""
        self.say(self.talkers[0], "#a", "one")
        self.say(self.talkers[1], "#b", "two")
        self.hub.private(self.talkers[2], "alice", "three")
        self.alice.session.handle("/quit")
        self.say(self.talkers[0], "#a", "after")
        self.assertEqual([getattr(e, "text", None) for e in self.alice.events],
                         ["one", "two", "three"])
        self.assertEqual(self.alice.closed, ["goodbye"])
        self.clock.advance(0)
        self.assertEqual(len(self.alice.deliveries), 1)
        gone = left(["#lobby"] + self.ROOMS, "alice", "quit")
        self.assertEqual(bares(self.talkers[0].events), [gone])
        self.assertEqual(bares(self.talkers[1].events), [gone])


class DeliveryFailureTests(HubTestMixin, SynchronousTestCase):
    """A participant whose deliver() raises is dropped; the others carry on in order."""

    def setUp(self):
        super().setUp()
        self.alice = self.connect("alice", "#dev")
        self.mallory = self.connect("mallory", "#dev", kind=FailingParticipant)
        self.mallory.failing = False
        self.bob = self.connect("bob", "#dev")
        self.carol = self.connect("carol")
        self.settle(self.alice, self.mallory, self.bob, self.carol)
        self.mallory.failing = True

    def test_failing_member_dropped(self):
        """The failing member is out of every room, closed, and the failure logged."""
        self.say(self.carol, "#lobby", "hi")
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(DeliveryError)), 1)
        self.assertEqual(self.hub.rooms_of(self.mallory), [])
        self.assertNotIn(self.mallory, self.room("#dev"))
        self.assertIsNone(self.hub.find("mallory"))
        self.assertEqual(self.mallory.closed, ["internal error, disconnecting"])
        self.assertIsNone(self.registry.holder("mallory"))

    def test_others_told_and_keep_order(self):
        """The others get the turn's lines, then one '* mallory left (delivery failed)'."""
        self.say(self.carol, "#lobby", "one")
        self.say(self.alice, "#dev", "two")
        self.clock.advance(0)
        self.flushLoggedErrors(DeliveryError)
        self.assertEqual(self.bob.lines(), [
            "[#lobby] carol: one", "alice: two", "* mallory left (delivery failed)",
        ])
        self.assertEqual(self.carol.lines(), ["* mallory left (delivery failed)"])
        self.assertEqual(self.alice.lines(), [
            "[#lobby] carol: one", "* mallory left (delivery failed)",
        ])
        self.assertEqual(self.clock.getDelayedCalls(), [])


# -- sinks -----------------------------------------------------------------------


@implementer(IEventSink)
class WatchingSink:
    """Records each event with whether C{watched} had been handed it already."""

    def __init__(self):
        self.watched = None
        self.recorded = []

    def record_turn(self, events):
        for event in events:
            self.recorded.append((event, any(event is seen for seen in self.watched.events)))


class SinkTests(HubTestMixin, SynchronousTestCase):
    """Sinks get stored events only, after the members; a failing sink harms nobody."""

    def build(self, *sinks):
        self.hub = Hub(self.clock, limits=self.limits, sinks=sinks)
        self.alice = self.connect("alice", "#dev")
        self.bob = self.connect("bob", "#dev", via="udp")

    def test_stored_events_only(self):
        """Room and user events are recorded; privates, replies and notices not."""
        sink = RecordingSink()
        self.build(sink)
        dev = self.room("#dev")
        self.hub.say(self.alice, dev, "hi")
        self.hub.emote(self.bob, dev, "waves")
        self.hub.set_topic(self.bob, dev, "t")
        self.hub.tell(self.alice, Notice("private notice"))
        self.hub.private(self.alice, "bob", "psst")
        self.alice.session.handle("/who")
        self.alice.session.handle("/nick alicia")
        self.hub.part(self.bob, dev, "later")
        self.bob.session.handle("/quit")
        self.clock.advance(0)
        self.assertEqual(bares(sink.recorded), [
            joined("#lobby", "alice"),
            joined("#dev", "alice"),
            joined("#lobby", "bob", "udp"),
            joined("#dev", "bob", "udp"),
            said("#dev", "alice", "hi"),
            Emote(0, 0.0, "#dev", "bob", "waves"),
            TopicChanged(0, 0.0, "#dev", "bob", "t"),
            renamed(["#lobby", "#dev"], "alice", "alicia"),
            parted("#dev", "bob", "later"),
            left(["#lobby"], "bob", "quit"),
        ])
        for event in sink.recorded:
            self.assertIn(type(event), STORED_EVENTS)
        ids = [event.id for event in sink.recorded]
        self.assertEqual(ids, sorted(set(ids)))

    def test_after_the_members(self):
        """When a sink records an event, the members have been handed it already."""
        sink = WatchingSink()
        self.build(sink)
        sink.watched = self.bob
        self.clock.advance(0)
        del sink.recorded[:]
        self.say(self.alice, "#dev", "hi")
        self.say(self.alice, "#lobby", "hello")
        self.clock.advance(0)
        self.assertEqual([(event.text, seen) for event, seen in sink.recorded],
                         [("hi", True), ("hello", True)])

    def test_raising_sink_is_logged_not_fatal(self):
        """A sink that raises is logged; other sinks and members still get the event."""
        sink = RecordingSink()
        self.build(RaisingSink(), sink)
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)  # one turn of four joins
        self.say(self.alice, "#dev", "hi")
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)
        self.assertEqual(sink.recorded[-1].text, "hi")
        self.assertEqual(self.bob.events[-1].text, "hi")

    def test_failed_deferred_sink_is_logged_not_fatal(self):
        """A sink whose Deferred fails is logged; members still get the event."""
        self.build(FailingDeferredSink())
        self.settle(self.bob)
        self.flushLoggedErrors(SinkError)
        self.say(self.alice, "#dev", "hi")
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(SinkError)), 1)
        self.assertEqual(texts(self.bob), ["hi"])

    def test_shutdown_leave_recorded_not_shown(self):
        """A leave during close_all is recorded, though nobody is shown it."""
        sink = RecordingSink()
        self.build(sink)
        self.settle(self.alice, self.bob)
        del sink.recorded[:]
        self.successResultOf(self.hub.close_all("server going down"))
        self.clock.advance(0)
        self.assertEqual(bares(sink.recorded), [
            left(["#lobby", "#dev"], "alice", "server shutting down"),
            left(["#lobby", "#dev"], "bob", "server shutting down"),
        ])
        for user in [self.alice, self.bob]:
            self.assertEqual(user.events, [])
            self.assertEqual(user.closed, ["server going down"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


# -- shutdown --------------------------------------------------------------------


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


class CloseAllTests(HubTestMixin, SynchronousTestCase):
    """close_all() ends every session, joined or not, and tells when all are gone."""

    def test_closes_joined_and_entered(self):
        """Members and users who have no nick yet are all closed with the reason."""
        alice = self.connect("alice", "#dev")
        waiting = FakeParticipant(None)
        Session(waiting, self.hub, self.registry, self.clock, self.limits).start()
        self.successResultOf(self.hub.close_all("server shutting down"))
        self.assertEqual(alice.closed, ["server shutting down"])
        self.assertEqual(waiting.closed, ["server shutting down"])
        self.assertTrue(self.hub.closing)
        self.assertEqual(self.hub.connected, 0)
        self.assertEqual(self.hub.rooms(), (("#lobby", 0, ""),))
        self.assertEqual(len(self.registry), 0)
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flushes_before_closing(self):
        """What the turn owed is delivered before the goodbye."""
        alice, bob = self.connect("alice"), self.connect("bob")
        self.settle(alice, bob)
        self.say(alice, "#lobby", "bye all")
        self.hub.close_all("server shutting down")
        self.assertEqual(texts(bob), ["bye all"])
        self.assertEqual(bob.closed, ["server shutting down"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_leave_lines_while_closing(self):
        """On shutdown nobody sees N-1 '* X left' lines before its own goodbye."""
        users = [self.connect(nick, "#dev") for nick in ["alice", "bob", "carol"]]
        self.settle(*users)
        self.hub.close_all("bye")
        self.clock.advance(0)
        for user in users:
            self.assertEqual(user.deliveries, [])

    def test_no_new_nicks_while_closing(self):
        """Someone choosing a nick during shutdown is refused."""
        self.hub.closing = True
        erin = FakeParticipant(None)
        Session(erin, self.hub, self.registry, self.clock, self.limits).start("erin")
        self.clock.advance(0)
        self.assertIn(Refusal("not-allowed", "server shutting down"), erin.events)
        self.assertIsNone(self.hub.find("erin"))

    def test_waits_for_every_close(self):
        """The Deferred fires only once every close has finished."""
        slow = self.connect("slow", kind=SlowClose)
        self.connect("quick")
        d = self.hub.close_all("bye")
        self.assertNoResult(d)
        slow.closing.callback(None)
        self.successResultOf(d)

    def test_never_fails(self):
        """Even a close that fails does not fail close_all (the failure is logged)."""
        self.connect("broken", kind=FailingClose)
        alice = self.connect("alice")
        self.successResultOf(self.hub.close_all("bye"))
        self.assertEqual(alice.closed, ["bye"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_ended_not_closed_again(self):
        """Who has quit already is not closed again."""
        alice = self.connect("alice")
        alice.session.handle("/quit")
        self.assertEqual(self.hub.connected, 0)
        self.successResultOf(self.hub.close_all("bye"))
        self.assertEqual(alice.closed, ["goodbye"])


# -- ids -----------------------------------------------------------------------


class EventIdTests(HubTestMixin, SynchronousTestCase):
    """Every event carries its room, an id and the server time; ids increase service-wide."""

    def test_room_id_time(self):
        """Lines, joins, parts, topics carry their room, the clock's time and an id."""
        sink = RecordingSink()
        self.hub.turn.sinks.append(sink)
        alice = self.connect("alice", "#Dev")
        self.clock.advance(1.5)
        dev = self.room("#dev")
        self.hub.say(alice, dev, "hi")
        self.hub.emote(alice, dev, "waves")
        self.hub.set_topic(alice, dev, "t")
        self.hub.part(alice, dev, "")
        self.clock.advance(0)
        rooms = [event.room for event in sink.recorded]
        self.assertEqual(rooms, ["#lobby", "#Dev", "#Dev", "#Dev", "#Dev", "#Dev"])
        times = [event.time for event in sink.recorded]
        self.assertEqual(times, [START] * 2 + [START + 1.5] * 4)
        for event in sink.recorded:
            self.assertIsInstance(event.id, int)
            self.assertGreater(event.id, 0)
            self.assertLess(event.id, 1 << 63)

    def test_unique_and_increasing_across_rooms_and_privates(self):
        """Ids from every room and private message are unique and increase in issue order."""
        sink = RecordingSink()
        self.hub.turn.sinks.append(sink)
        alice = self.connect("alice", "#a", "#b")
        bob = self.connect("bob", "#b", "#c")
        issued = []
        for i in range(3000):  # all in one millisecond of the clock
            room = ["#lobby", "#a", "#b", "#c"][i % 4]
            speaker = bob if room == "#c" else alice
            if i % 7 == 0:
                self.hub.private(speaker, "bob" if speaker is alice else "alice", str(i))
            else:
                self.say(speaker, room, str(i))
        self.clock.advance(0)
        for user in [alice, bob]:
            issued += [(event.id, type(event)) for event in user.events
                       if type(event) in (Said, Private)]
        ids = sorted(event.id for event in sink.recorded)
        ids += [event_id for event_id, kind in issued if kind is Private]
        self.assertEqual(len(ids), len(set(ids)))
        recorded = [event.id for event in sink.recorded]
        self.assertEqual(recorded, sorted(recorded))
        for user in [alice, bob]:
            seen = [event.id for event in user.events if hasattr(event, "id")]
            self.assertEqual(seen, sorted(seen))
            self.assertEqual(len(seen), len(set(seen)))

    def test_ids_above_the_history(self):
        """A hub given an id generator advanced past the history issues above it."""
        self.hub.ids.advance_past(self.hub.ids.next() + (1 << 30))
        floor = self.hub.ids.next()
        alice = self.connect("alice")
        self.settle(alice)
        sink = RecordingSink()
        self.hub.turn.sinks.append(sink)
        self.say(alice, "#lobby", "hi")
        self.clock.advance(0)
        self.assertGreater(sink.recorded[0].id, floor)


# -- history replay against live lines ----------------------------------------------


class ReplayTestMixin(HubTestMixin):
    """A hub with a fake store answering late; alice and bob are in #lobby, replays done."""

    history_mode = "late"

    def setUp(self):
        super().setUp()
        self.alice = self.connect("alice", "#dev")
        self.bob = self.connect("bob")
        self.clock.advance(0)
        for d, *_ in list(self.store.asks):
            d.callback([])
        self.settle(self.alice, self.bob)
        self.lobby = self.hub.default_room
        self.hub.say(self.alice, self.lobby, "old1")
        self.hub.say(self.bob, self.lobby, "old2")
        self.settle(self.alice, self.bob)
        self.asked = len(self.store.asks)

    def carol(self, *rooms):
        return self.connect("carol", *rooms)

    def replay_of(self, *texts_):
        """What a replay of lines C{texts_} of #lobby looks like, framed."""
        lines = {event.text: event for event in self.store.recorded if type(event) is Said}
        return (
            [HistoryStart("#lobby", len(texts_))]
            + [replayed(lines[text]) for text in texts_]
            + [HistoryEnd("#lobby")]
        )

    def shown(self, participant) -> list:
        """What C{participant} was shown, without its welcome and hint."""
        return [bare(event) for event in participant.events
                if type(event).__name__ not in ("Welcome", "Notice")]


class ResumeTests(ReplayTestMixin, SynchronousTestCase):
    """A returning client names the last id it saw: it is shown what came after, then live."""

    def test_join_since_asks_for_what_came_after_and_then_live_lines(self):
        old1 = next(e for e in self.store.recorded if type(e) is Said and e.text == "old1")
        self.hub.say(self.alice, self.dev(), "elsewhere")  # not #lobby's
        carol = FakeParticipant(None, "web")
        carol.session = Session(carol, self.hub, self.registry, self.clock, self.limits,
                                lands_in_default_room=False)
        carol.session.start("carol")
        carol.session.handle(Join("#lobby", since=old1.id))
        self.clock.advance(0)
        [ask] = self.store.asks[self.asked:]
        joined = next(e for e in self.store.recorded if type(e) is Joined and e.nick == "carol")
        self.assertEqual(ask[1:], ("#lobby", RESUME_MAX, joined.id, old1.id))
        self.hub.say(self.bob, self.lobby, "live1")  # while the store answers
        self.clock.advance(0)
        self.store.answer()
        self.clock.advance(0)
        shown = [e for e in self.shown(carol) if type(e).__name__ not in ("Registered",
                                                                          "RoomJoined")]
        self.assertEqual(shown, self.replay_of("old2") + [said("#lobby", "bob", "live1")])

    def test_history_after_and_before_bound_the_lines_shown(self):
        lines = [e for e in self.store.recorded if type(e) is Said]
        self.hub.history(self.alice, self.lobby, 5, after=lines[0].id)
        self.clock.advance(0)
        self.assertEqual(self.store.asks[-1][4], lines[0].id)
        self.store.answer()
        self.clock.advance(0)
        self.assertEqual(self.shown(self.alice), self.replay_of("old2"))
        self.alice.clear()
        self.hub.history(self.alice, self.lobby, 5, before=lines[1].id)
        self.clock.advance(0)
        self.assertEqual(self.store.asks[-1][3], lines[1].id)
        self.store.answer()
        self.clock.advance(0)
        self.assertEqual(self.shown(self.alice), self.replay_of("old1"))

    def dev(self):
        return self.hub.room("#dev")


class ReplayTests(ReplayTestMixin, SynchronousTestCase):
    """Live lines published while the history query runs come after the replay."""

    def test_query_asks_before_the_join(self):
        """The query: the room's key, the replay count, below the join's id; after the turn."""
        self.carol("#Ops")
        self.assertEqual(len(self.store.asks), self.asked)  # not before the end of the turn
        self.clock.advance(0)
        joins = {event.room: event for event in self.store.recorded
                 if type(event) is Joined and event.nick == "carol"}
        asks = [ask[1:] for ask in self.store.asks[self.asked:]]
        self.assertEqual(asks, [
            ("#lobby", 20, joins["#lobby"].id), ("#ops", 20, joins["#Ops"].id),
        ])

    def test_late_answer_then_live_lines(self):
        """Lines published while the store answers come after the replay: none lost or twice."""
        carol = self.carol()
        self.clock.advance(0)
        self.hub.say(self.alice, self.lobby, "live1")
        self.clock.advance(0)
        self.hub.say(self.bob, self.lobby, "live2")
        self.clock.advance(0)
        self.assertEqual(self.shown(carol), [])
        self.assertEqual(texts(self.bob), ["live1"])
        self.store.answer()
        self.clock.advance(0)
        self.hub.say(self.alice, self.lobby, "live3")
        self.clock.advance(0)
        self.assertEqual(self.shown(carol), self.replay_of("old1", "old2") + [
            said("#lobby", "alice", "live1"),
            said("#lobby", "bob", "live2"),
            said("#lobby", "alice", "live3"),
        ])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answer_in_a_turn_with_live_lines(self):
        """A line of the very turn the answer comes in is neither before nor in the replay."""
        carol = self.carol()
        self.clock.advance(0)
        self.hub.say(self.alice, self.lobby, "live1")
        self.clock.advance(0)
        self.hub.say(self.alice, self.lobby, "live2")  # same turn, before the answer
        self.store.answer()
        self.hub.say(self.bob, self.lobby, "live3")  # same turn, after the answer
        self.clock.advance(0)
        self.assertEqual(self.shown(carol), self.replay_of("old1", "old2") + [
            said("#lobby", "alice", "live1"),
            said("#lobby", "alice", "live2"),
            said("#lobby", "bob", "live3"),
        ])

    def test_line_before_join_same_turn_is_in_replay(self):
        """A line of the join's own turn, before the join, is in the replay and not live."""
        self.hub.say(self.alice, self.lobby, "just before")
        carol = self.carol()
        self.hub.say(self.bob, self.lobby, "just after")
        self.clock.advance(0)
        self.store.answer()
        self.clock.advance(0)
        self.assertEqual(self.shown(carol), self.replay_of("old1", "old2", "just before") + [
            said("#lobby", "bob", "just after"),
        ])

    def test_answer_at_once(self):
        """A store that answers at once: the replay, then the lines held during the turn."""
        self.store.mode = "now"
        self.hub.say(self.alice, self.lobby, "just before")
        carol = self.carol()
        self.hub.say(self.bob, self.lobby, "just after")
        self.clock.advance(0)
        self.assertEqual(self.shown(carol), self.replay_of("old1", "old2", "just before") + [
            said("#lobby", "bob", "just after"),
        ])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_replay_count(self):
        """The replay holds the last N lines only."""
        self.hub = Hub(self.clock, history=self.store, replay=1)
        self.store.mode = "now"
        alice = self.connect("alice2")
        self.hub.say(alice, self.hub.default_room, "x")
        self.settle(alice)
        carol = self.carol()
        self.clock.advance(0)
        self.assertEqual(self.store.asks[-1][2], 1)
        self.assertEqual([type(event) for event in self.shown(carol)],
                         [HistoryStart, Replayed, HistoryEnd])
        self.assertEqual(self.shown(carol)[1].event.text, "x")

    def test_empty_history_no_frame(self):
        """A room with nothing stored replays nothing, not an empty frame; held lines follow."""
        carol = self.carol()
        self.hub.join(self.bob, "#new")
        self.hub.join(carol, "#new")
        self.clock.advance(0)
        self.say(self.bob, "#new", "live")
        self.clock.advance(0)
        self.assertEqual(texts(carol), [])
        self.store.answer()
        self.clock.advance(0)
        self.assertEqual(self.shown(carol)[-1], said("#new", "bob", "live"))
        self.assertNotIn(HistoryStart("#new", 0), self.shown(carol))

    def test_other_rooms_flow_while_one_replays(self):
        """Only the replaying room is held: lines of a user's other rooms arrive at once."""
        carol = self.carol()
        self.clock.advance(0)
        self.store.answer()
        self.clock.advance(0)
        carol.clear()
        carol.session.handle("/join #dev")
        self.clock.advance(0)
        self.say(self.alice, "#dev", "dev live")
        self.say(self.bob, "#lobby", "lobby live")
        self.clock.advance(0)
        self.assertEqual(texts(carol), ["lobby live"])
        self.store.answer()
        self.clock.advance(0)
        self.assertEqual(texts(carol), ["lobby live", "dev live"])

    def test_replay_shows_times(self):
        """Replayed lines carry their original time, and render with it."""
        carol = self.carol()
        self.clock.advance(0)
        self.clock.advance(5)
        self.store.answer()
        self.clock.advance(0)
        [start, first, second, end] = [event for event in carol.events
                                       if type(event) in (HistoryStart, Replayed, HistoryEnd)]
        self.assertEqual((first.event.time, first.now), (START, START + 5))
        self.assertEqual(start, HistoryStart("#lobby", 2))
        self.assertEqual(end, HistoryEnd("#lobby"))
        self.assertRegex(carol.lines()[-3], r"^\[\d\d:\d\d\] alice: old1$")

    def test_no_history_no_replay(self):
        """Without a store, or with --replay 0, nothing is asked and nothing is held."""
        for n, hub in enumerate([Hub(self.clock), Hub(self.clock, history=self.store, replay=0)]):
            self.hub = hub
            first = self.connect(f"first{n}")
            second = self.connect(f"second{n}")
            self.settle(first, second)
            self.say(first, "#lobby", "hi")
            self.clock.advance(0)
            self.assertEqual(texts(second), ["hi"])
        self.assertEqual(len(self.store.asks), self.asked)


class ReplayFailureTests(ReplayTestMixin, SynchronousTestCase):
    """A store that fails or never answers: the user is told, held lines follow."""

    def test_failure(self):
        """A failed query is an 'unavailable' refusal, logged, then the held live lines."""
        carol = self.carol()
        self.clock.advance(0)
        self.hub.say(self.alice, self.lobby, "live1")
        self.clock.advance(0)
        self.store.fail()
        self.clock.advance(0)
        self.assertEqual(self.shown(carol), [
            Refusal("unavailable", "the history of #lobby is unavailable now"),
            said("#lobby", "alice", "live1"),
        ])
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
        self.assertEqual(Unavailable.kind, "unavailable")

    def test_busy_store_is_told_without_a_traceback(self):
        """A store refusing a query as busy (Unavailable) is told to the user like a failure,
        but is a named limit the store logged, not a bug: no failure is logged."""
        carol = self.carol()
        self.clock.advance(0)
        self.store.fail(error=Unavailable("the history is busy; try again in a moment"))
        self.clock.advance(0)
        self.assertEqual(self.shown(carol), [
            Refusal("unavailable", "the history of #lobby is unavailable now"),
        ])
        self.hub.history(self.bob, self.lobby, 5)
        self.clock.advance(0)
        self.store.fail(error=Unavailable("the history is busy; try again in a moment"))
        self.clock.advance(0)
        self.assertEqual(self.bob.events[-1],
                         Refusal("unavailable", "the history of #lobby is unavailable now"))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_never_answers(self):
        """After REPLAY_TIMEOUT the user is told and gets the held lines; no timer is left."""
        self.store.mode = "never"
        carol = self.carol()
        self.clock.advance(0)
        self.hub.say(self.alice, self.lobby, "live1")
        self.clock.advance(REPLAY_TIMEOUT - 1)
        self.hub.say(self.bob, self.lobby, "live2")
        self.clock.advance(0)
        self.assertEqual(self.shown(carol), [])
        self.clock.advance(1)
        self.assertEqual(self.shown(carol), [
            Refusal("unavailable", "the history of #lobby is unavailable now"),
            said("#lobby", "alice", "live1"),
            said("#lobby", "bob", "live2"),
        ])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.hub.say(self.alice, self.lobby, "live3")
        self.clock.advance(0)
        self.assertEqual(texts(carol), ["live1", "live2", "live3"])


class ReplayCancelTests(ReplayTestMixin, SynchronousTestCase):
    """Leaving the room or the service while the replay is pending drops it cleanly."""

    def test_part_while_pending(self):
        """The replay is dropped; the held lines from before the part are shown; no timers."""
        carol = self.carol("#dev")
        self.clock.advance(0)
        [ask] = [ask for ask in self.store.asks[self.asked:] if ask[1] == "#dev"]
        self.say(self.alice, "#dev", "held")
        self.clock.advance(0)
        self.say(self.alice, "#dev", "same turn")
        self.hub.part(carol, self.room("#dev"), "")
        self.say(self.alice, "#dev", "after part")
        self.clock.advance(0)
        self.assertEqual(texts(carol), ["held", "same turn"])
        self.assertTrue(ask[0].called)  # cancelled
        self.assertEqual([event for event in carol.events if type(event) is HistoryStart], [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        # the lobby replay is still pending: answer it; nothing of #dev comes back
        self.store.answer(-2)
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse([event for event in carol.events if type(event) is Refusal])

    def test_part_in_the_join_turn(self):
        """Parting in the join's own turn: no query at all."""
        carol = self.carol("#dev")
        self.hub.part(carol, self.room("#dev"), "")
        self.clock.advance(0)
        self.assertEqual([ask[1] for ask in self.store.asks[self.asked:]], ["#lobby"])
        self.store.answer()
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_part_and_join_again(self):
        """Part and join again while pending: one replay, from the second join."""
        carol = self.carol("#dev")
        self.clock.advance(0)
        self.store.answer(-2)  # the lobby's
        self.hub.part(carol, self.room("#dev"), "")
        self.hub.join(carol, "#dev")
        self.clock.advance(0)
        dev_asks = [ask for ask in self.store.asks[self.asked:] if ask[1] == "#dev"]
        self.assertEqual(len(dev_asks), 2)
        self.assertTrue(dev_asks[0][0].called)
        self.say(self.alice, "#dev", "live")
        self.clock.advance(0)
        self.store.answer()
        self.clock.advance(0)
        self.assertEqual(texts(carol)[-1:], ["live"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_quit_while_pending(self):
        """Quitting while pending: nothing more is delivered, no timer is left."""
        carol = self.carol()
        self.clock.advance(0)
        self.hub.say(self.alice, self.lobby, "held")
        self.clock.advance(0)
        d = self.store.asks[-1][0]
        carol.session.handle("/quit")
        self.assertTrue(d.called)
        shown = len(carol.events)
        self.clock.advance(0)
        self.assertEqual(len(carol.events), shown)
        self.assertEqual(self.shown(carol), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertEqual(
            bares(self.alice.events)[-1], left(["#lobby"], "carol", "quit")
        )

    def test_shutdown_while_pending(self):
        """close_all while pending: every session ends, no timer is left."""
        carol = self.carol("#dev")
        self.clock.advance(0)
        self.successResultOf(self.hub.close_all("bye"))
        self.clock.advance(0)
        self.assertEqual(carol.closed, ["bye"])
        self.assertEqual([type(event) for event in self.shown(carol)], [RoomJoined])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for d, *_ in self.store.asks:
            self.assertTrue(d.called)


class HistoryOnDemandTests(ReplayTestMixin, SynchronousTestCase):
    """hub.history: the last N lines, framed, on demand."""

    def test_shows_last_lines(self):
        """The query is below a fresh id, so this turn's lines are in it."""
        self.hub.say(self.alice, self.lobby, "now")
        self.hub.history(self.bob, self.lobby, 2)
        self.clock.advance(0)
        self.store.answer()
        self.clock.advance(0)
        self.assertEqual(self.store.asks[-1][1:3], ("#lobby", 2))
        lines = {event.text: event for event in self.store.recorded if type(event) is Said}
        self.assertEqual(bares(self.bob.events), [
            said("#lobby", "alice", "now"),
            HistoryStart("#lobby", 2),
            replayed(lines["old2"]),
            replayed(lines["now"]),
            HistoryEnd("#lobby"),
        ])

    def test_refusals(self):
        """Only members may ask; a hub without a store refuses; a failed query is told."""
        outsider = self.connect("zed")
        self.hub.part(outsider, self.lobby, "")
        self.assertRaises(NotInRoom, self.hub.history, outsider, self.lobby, 5)
        self.assertRaises(Unavailable, Hub(self.clock).history, self.bob, self.lobby, 5)
        self.hub.history(self.bob, self.lobby, 5)
        self.clock.advance(0)
        self.store.fail()
        self.clock.advance(0)
        self.assertEqual(self.bob.events[-1],
                         Refusal("unavailable", "the history of #lobby is unavailable now"))
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)

    def test_timeout(self):
        """A query that never answers is told after REPLAY_TIMEOUT; no timer is left."""
        self.store.mode = "never"
        self.hub.history(self.bob, self.lobby, 5)
        self.clock.advance(0)
        self.clock.advance(REPLAY_TIMEOUT)
        self.assertEqual(self.bob.events[-1],
                         Refusal("unavailable", "the history of #lobby is unavailable now"))
        self.assertEqual(len(self.flushLoggedErrors(defer.TimeoutError)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_gone_before_the_answer(self):
        """A user who quits before the answer is shown nothing more."""
        self.hub.history(self.bob, self.lobby, 5)
        self.clock.advance(0)
        self.bob.session.handle("/quit")
        shown = len(self.bob.events)
        self.store.answer()
        self.clock.advance(0)
        self.assertEqual(len(self.bob.events), shown)
        self.assertEqual(self.clock.getDelayedCalls(), [])
