"""
Property tests: scrub never lets a control through, the nick registry stays consistent with a
simple model, no line a user types can crash a session or reach another user as a control, the
end-of-turn batch hands each participant exactly what a naive reference would, and random joins,
parts, renames, lines, /me, topics and quits keep every user's view equal to a simple model's.
"""

import re
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.batch import Turn
from chatservice.core.errors import InvalidNick, NickInUse
from chatservice.core.events import (
    STORED_EVENTS,
    Emote,
    Joined,
    Left,
    Notice,
    Parted,
    Renamed,
    Said,
    TopicChanged,
)
from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.limits import Limits
from chatservice.core.names import fold
from chatservice.core.nicks import NickRegistry
from chatservice.core.render import as_line, scrub
from chatservice.core.rooms import Room
from chatservice.core.session import Session
from tests.fakes import FakeParticipant

PROPERTY = settings(deadline=None, max_examples=200)
#: The model tests run many steps per example: fewer examples keep the file to seconds.
MODEL = settings(deadline=None, max_examples=120)

#: The nick rules, written again independently of chatservice.core.nicks.
VALID_NICK = re.compile(r"[A-Za-z_\[\]{}\\|^][A-Za-z0-9_\-\[\]{}\\|^]{0,31}")


def is_control(char: str) -> bool:
    """C0 but tab, DEL, C1 (ESC is C0)."""
    code = ord(char)
    return (code < 0x20 and char != "\t") or 0x7F <= code <= 0x9F


#: Text rich in escape sequences and controls, mixed with ordinary and non-ASCII text.
NASTY_PIECES = st.sampled_from(
    [
        "\x1b", "\x1b[", "\x1b]", "\x1bP", "\x1b\\", "\x9b", "\x9d", "\x90", "\x07", "\x9c",
        "[31m", "0;title", "2J", "\r", "\n", "\t", "\x00", "\x7f", "\x85", "a", " ", "/",
        "\u00e9", "\u4e2d", "\U0001f600",
    ]
)
NASTY_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(NASTY_PIECES, max_size=30).map("".join),
    st.lists(st.one_of(NASTY_PIECES, st.text(max_size=5)), max_size=20).map("".join),
)


class ScrubPropertyTests(SynchronousTestCase):
    """Whatever goes in, no control comes out."""

    @PROPERTY
    @given(NASTY_TEXT)
    def test_no_control_survives(self, text):
        """No C0 (but tab), DEL or C1 character, and no ESC, survives scrub()."""
        scrubbed = scrub(text)
        self.assertEqual([char for char in scrubbed if is_control(char)], [])
        self.assertNotIn("\x1b", scrubbed)

    @PROPERTY
    @given(NASTY_TEXT)
    def test_idempotent(self, text):
        """Scrubbing twice changes nothing more."""
        self.assertEqual(scrub(scrub(text)), scrub(text))

    @PROPERTY
    @given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=80))
    def test_text_without_controls_kept(self, text):
        """Text without control characters comes back unchanged."""
        self.assertEqual(scrub(text), text)


NICKS = st.one_of(
    st.sampled_from(
        ["alice", "Alice", "ALICE", "bob", "BoB", "carol", "[x]", "{X}", "a" * 32, "a" * 33,
         "1abc", "-abc", "", "a b", "\u00e9"]
    ),
    st.text(alphabet="aAbB_-[]{}\\|^19", min_size=0, max_size=4),
)
OWNERS = st.integers(0, 2)
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), NICKS, OWNERS),
        st.tuples(st.just("rename"), NICKS, NICKS, OWNERS),
        st.tuples(st.just("rename-own"), st.integers(0, 10), NICKS),
        st.tuples(st.just("release"), NICKS, OWNERS),
    ),
    max_size=60,
)


class NickModel:
    """What the registry should hold: folded key -> (display nick, owner)."""

    def __init__(self):
        self.held = {}

    def reserve(self, nick, owner):
        if not VALID_NICK.fullmatch(nick):
            return InvalidNick
        if nick.lower() in self.held:
            return NickInUse
        self.held[nick.lower()] = (nick, owner)
        return nick

    def rename(self, old, new, owner):
        if not VALID_NICK.fullmatch(new):
            return InvalidNick
        held = self.held.get(old.lower())
        if held is None or held[1] is not owner:
            return KeyError
        if new.lower() != old.lower() and new.lower() in self.held:
            return NickInUse
        del self.held[old.lower()]
        self.held[new.lower()] = (new, owner)
        return new

    def release(self, nick, owner):
        held = self.held.get(nick.lower())
        if held is not None and held[1] is owner:
            del self.held[nick.lower()]


class NickRegistryPropertyTests(SynchronousTestCase):
    """Any sequence of reserve, rename and release keeps the registry consistent."""

    def apply(self, call, *args):
        """Call the registry; return its answer, or the class of what it raised."""
        try:
            return call(*args)
        except (InvalidNick, NickInUse, KeyError) as error:
            return type(error)

    @PROPERTY
    @given(OPERATIONS)
    def test_matches_model(self, operations):
        """After every step the registry holds what the model holds, and nothing collides."""
        owners = [object(), object(), object()]
        registry, model = NickRegistry(), NickModel()
        for operation in operations:
            kind = operation[0]
            if kind == "reserve":
                _, nick, owner = operation
                expected = model.reserve(nick, owners[owner])
                self.assertEqual(self.apply(registry.reserve, nick, owners[owner]), expected)
            elif kind == "rename":
                _, old, new, owner = operation
                expected = model.rename(old, new, owners[owner])
                self.assertEqual(self.apply(registry.rename, old, new, owners[owner]), expected)
            elif kind == "rename-own":
                _, index, new = operation
                if not model.held:
                    continue
                old, owner = sorted(model.held.values(), key=lambda held: held[0])[
                    index % len(model.held)
                ]
                expected = model.rename(old, new, owner)
                self.assertEqual(self.apply(registry.rename, old, new, owner), expected)
            else:
                _, nick, owner = operation
                model.release(nick, owners[owner])
                self.assertIsNone(registry.release(nick, owners[owner]))
            held = list(registry)
            self.assertEqual(len(registry), len(model.held))
            self.assertEqual(len({nick.lower() for nick in held}), len(held))
            self.assertEqual(sorted(held), sorted(display for display, _ in model.held.values()))
            for display, owner in model.held.values():
                self.assertIs(registry.holder(display), owner)
                self.assertIs(registry.holder(display.swapcase()), owner)


#: Lines a user might type: commands with nasty arguments, and nasty text.
LINES = st.one_of(
    NASTY_TEXT,
    st.tuples(
        st.sampled_from(["/msg bob ", "/msg ", "/me ", "/nick ", "/quit ", "/who", "/help", "//",
                         "/MSG BOB ", "/", "/nick\x1b[31m", "/m\x00e ", "/join ", "/join #",
                         "/part ", "/part #lobby ", "/topic ", "/topic #lobby ", "/rooms",
                         "/history ", "/who #"]),
        NASTY_TEXT,
    ).map("".join),
)


class SessionPropertyTests(SynchronousTestCase):
    """No line breaks a session, and no control reaches another user."""

    @PROPERTY
    @given(st.lists(LINES, min_size=1, max_size=12), st.booleans())
    def test_lines_never_hurt_others(self, lines, alice_first):
        """Arbitrary lines never raise, and what bob is shown never holds a control."""
        clock = Clock()
        registry = NickRegistry()
        hub = Hub(clock)
        limits = Limits(flood=FloodPolicy(rate=0, burst=0))
        bob = FakeParticipant(None)
        Session(bob, hub, registry, clock, limits).start("bob")
        mallory = FakeParticipant(None, "udp")
        session = Session(mallory, hub, registry, clock, limits)
        session.start()
        if alice_first:
            session.handle("alice")
        for line in lines:
            session.handle(line)
            clock.advance(0.125)
        clock.advance(0)
        for event in bob.events:
            for current in [None, "#lobby"]:
                shown = as_line(event, current)
                self.assertEqual(
                    [char for char in shown if is_control(char) and char != "\n"], [], shown
                )
                self.assertNotIn("\x1b", shown)
        self.assertEqual(bob.closed, [])
        self.assertIs(hub.find("bob"), bob)
        if session.joined:
            self.assertIs(registry.holder(mallory.nick), session)
            self.assertEqual(len(registry), 2)
        else:
            self.assertEqual(list(registry), ["bob"])


# -- the end-of-turn batch against a naive reference ------------------------------------

TURN_PEOPLE = 4
TURN_ROOMS = 3
TURN_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(0, TURN_ROOMS - 1),
                  st.one_of(st.none(), st.integers(0, TURN_PEOPLE - 1))),
        st.tuples(st.just("tell"), st.integers(0, TURN_PEOPLE - 1)),
        st.tuples(st.just("publish_to"), st.sets(st.integers(0, TURN_PEOPLE - 1))),
        st.tuples(st.just("join"), st.integers(0, TURN_PEOPLE - 1), st.integers(0, TURN_ROOMS - 1)),
        st.tuples(st.just("part"), st.integers(0, TURN_PEOPLE - 1), st.integers(0, TURN_ROOMS - 1)),
        st.tuples(st.just("flush")),
    ),
    max_size=40,
)


class TurnPropertyTests(SynchronousTestCase):
    """Whatever is published, told, joined and parted, each view is what a naive model says."""

    @MODEL
    @given(TURN_STEPS, st.lists(st.lists(st.integers(0, TURN_ROOMS - 1), unique=True),
                                min_size=TURN_PEOPLE, max_size=TURN_PEOPLE))
    def test_views_match_reference(self, steps, start_rooms):
        """Each participant gets, in order, exactly what it should, at most once per turn."""
        clock = Clock()
        rooms = [Room(f"#r{n}") for n in range(TURN_ROOMS)]
        people = [FakeParticipant(f"p{n}") for n in range(TURN_PEOPLE)]
        rooms_of = {}
        for person, indices in zip(people, start_rooms):
            rooms_of[person] = [rooms[i] for i in indices]
            for room in rooms_of[person]:
                room.members[person] = None
        turn = Turn(clock, rooms_of)
        expected = {person: [] for person in people}
        counter = 0
        for step in steps:
            kind = step[0]
            counter += 1
            if kind == "publish":
                _, r, sender = step
                room = rooms[r]
                event = Said(counter, 0.0, room.name, "x", str(counter))
                exclude = None if sender is None else people[sender]
                turn.publish(event, room, exclude=exclude)
                for member in room.members:
                    if member is not exclude:
                        expected[member].append(event)
            elif kind == "tell":
                event = Notice(str(counter))
                turn.tell(people[step[1]], event)
                expected[people[step[1]]].append(event)
            elif kind == "publish_to":
                event = Left(counter, 0.0, (), "x", str(counter))
                audience = {people[i]: None for i in sorted(step[1])}
                turn.publish_to(event, audience)
                for person in audience:
                    expected[person].append(event)
            elif kind == "join":
                person, room = people[step[1]], rooms[step[2]]
                if person not in room.members:
                    turn.joined(person, room)
                    room.members[person] = None
                    rooms_of[person].append(room)
            elif kind == "part":
                person, room = people[step[1]], rooms[step[2]]
                if person in room.members:
                    turn.parted(person, room)
                    del room.members[person]
                    rooms_of[person].remove(room)
            else:
                before = [len(person.deliveries) for person in people]
                turn.flush()
                for person, count in zip(people, before):
                    self.assertLessEqual(len(person.deliveries) - count, 1)
                    self.assertEqual(person.events, expected[person])
        before = [len(person.deliveries) for person in people]
        clock.advance(0)
        for person, count in zip(people, before):
            self.assertLessEqual(len(person.deliveries) - count, 1)
            self.assertEqual(person.events, expected[person])
            for batch in person.deliveries:
                self.assertGreater(len(batch), 0)
        self.assertEqual(clock.getDelayedCalls(), [])


# -- the whole hub against a simple model -------------------------------------------------

SLOTS = 4
ROOM_NAMES = ["#lobby", "#Lobby", "#a", "#A", "#b.c", "#B.C"]
NICK_POOL = ["ann", "Ann", "bo", "cy", "DI", "di"]
TEXTS = ["hi", "yo there", "x"]
REASONS = ["", "bye"]
SLOT = st.integers(0, SLOTS - 1)
HUB_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), SLOT),
        st.tuples(st.just("join"), SLOT, st.sampled_from(ROOM_NAMES)),
        st.tuples(st.just("part"), SLOT, st.sampled_from(ROOM_NAMES), st.sampled_from(REASONS)),
        st.tuples(st.just("nick"), SLOT, st.sampled_from(NICK_POOL)),
        st.tuples(st.just("say"), SLOT, st.sampled_from(TEXTS)),
        st.tuples(st.just("me"), SLOT, st.sampled_from(TEXTS)),
        st.tuples(st.just("topic"), SLOT, st.sampled_from(TEXTS)),
        st.tuples(st.just("quit"), SLOT, st.sampled_from(REASONS)),
        st.tuples(st.just("flush")),
    ),
    max_size=45,
)


def shape(event) -> tuple:
    """A stored event without its id and time, as the model writes it."""
    kind = type(event)
    if kind is Said:
        return ("said", event.room, event.nick, event.text)
    if kind is Emote:
        return ("emote", event.room, event.nick, event.text)
    if kind is Joined:
        return ("joined", event.room, event.nick)
    if kind is Parted:
        return ("parted", event.room, event.nick, event.reason)
    if kind is TopicChanged:
        return ("topic", event.room, event.nick, event.text)
    if kind is Renamed:
        return ("renamed", event.rooms, event.old, event.new)
    if kind is Left:
        return ("left", event.rooms, event.nick, event.reason)
    raise AssertionError(f"not a stored event: {event!r}")


@dataclass(eq=False)
class ModelUser:
    """One connection in the model, and what its user should have been shown."""

    participant: FakeParticipant
    session: Session
    nick: str
    rooms: list = field(default_factory=list)  # folded names, in joining order
    current: str | None = None
    alive: bool = True
    expected: list = field(default_factory=list)


class ChatModel:
    """
    The rules of issue 9 written as plainly as possible: rooms hold users in joining order, an
    event goes to the members of its room at the time (minus its sender for lines and joins), a
    rename or a quit goes once to everyone sharing a room (the renamer too), an empty room other
    than #lobby disappears.
    """

    def __init__(self):
        self.rooms = {"#lobby": ["#lobby", []]}  # key -> [display name, [users]]

    def name(self, key):
        return self.rooms[key][0]

    def members(self, key):
        return self.rooms[key][1]

    def tell(self, users, event):
        for user in users:
            user.expected.append(event)

    def sharing(self, user):
        """Everyone who shares a room with C{user}, once each, C{user} included."""
        audience = {}
        for key in user.rooms:
            audience.update(dict.fromkeys(self.members(key)))
        return list(audience)

    def join(self, user, name):
        key = fold(name)
        user.current = key
        if key in user.rooms:
            return
        if key not in self.rooms:
            self.rooms[key] = [name, []]
        self.tell(self.members(key), ("joined", self.name(key), user.nick))
        self.members(key).append(user)
        user.rooms.append(key)

    def leave_room(self, user, key):
        self.members(key).remove(user)
        user.rooms.remove(key)
        if not self.members(key) and key != "#lobby":
            del self.rooms[key]

    def part(self, user, name, reason):
        key = fold(name)
        if key not in user.rooms:
            return  # refused: no such room, or not in it
        display = self.name(key)
        self.leave_room(user, key)
        self.tell(self.members(key) if key in self.rooms else [],
                  ("parted", display, user.nick, reason))
        if user.current == key:
            user.current = user.rooms[-1] if user.rooms else None

    def line(self, user, kind, text, with_self=False):
        if user.current is None:
            return  # refused: in no room
        key = user.current
        audience = [member for member in self.members(key) if with_self or member is not user]
        self.tell(audience, (kind, self.name(key), user.nick, text))

    def rename(self, user, new, users):
        if new == user.nick:
            return  # refused: already so called
        if any(other.alive and other is not user and fold(other.nick) == fold(new)
               for other in users):
            return  # refused: in use
        rooms = tuple(self.name(key) for key in user.rooms)
        self.tell(self.sharing(user) or [user], ("renamed", rooms, user.nick, new))
        user.nick = new

    def quit(self, user, reason):
        rooms = tuple(self.name(key) for key in user.rooms)
        audience = [other for other in self.sharing(user) if other is not user]
        for key in list(user.rooms):
            self.leave_room(user, key)
        self.tell(audience, ("left", rooms, user.nick, reason or "quit"))
        user.alive = False
        user.current = None

    def listing(self):
        return tuple(sorted(
            ((name, len(members)) for name, members in self.rooms.values()),
            key=lambda item: fold(item[0]),
        ))


class HubModelPropertyTests(SynchronousTestCase):
    """Random joins, parts, renames, lines, /me, topics and quits: every view equals the model's."""

    limits = Limits(flood=FloodPolicy(rate=0, burst=0))

    def connect(self, slot, generation):
        participant = FakeParticipant(None, "tcp")
        session = Session(participant, self.hub, self.registry, self.clock, self.limits)
        user = ModelUser(participant, session, f"u{slot}g{generation}")
        session.start(user.nick)
        self.model.join(user, "#lobby")
        return user

    def check(self, users):
        for user in users:
            shown = [event for event in user.participant.events if type(event) in STORED_EVENTS]
            self.assertEqual([shape(event) for event in shown], user.expected, user.nick)
            ids = [event.id for event in shown]
            self.assertEqual(ids, sorted(set(ids)))
            self.assertEqual(user.participant.nick, user.nick)
        self.assertEqual(
            tuple((name, count) for name, count, _ in self.hub.rooms()), self.model.listing()
        )
        for user in users:
            if user.alive:
                self.assertEqual([room.key for room in self.hub.rooms_of(user.participant)],
                                 user.rooms)
                current = None if user.current is None else self.model.name(user.current)
                self.assertEqual(user.participant.room, current)

    @MODEL
    @given(st.lists(st.lists(st.sampled_from(ROOM_NAMES[2:]), max_size=3),
                    min_size=SLOTS, max_size=SLOTS),
           HUB_STEPS)
    def test_views_match_model(self, first_joins, steps):
        """After every turn, each user was shown exactly the model's events, in order."""
        self.clock = Clock()
        self.clock.advance(1_750_000_000)
        self.registry = NickRegistry()
        self.hub = Hub(self.clock, limits=self.limits)
        self.model = ChatModel()
        generations = [0] * SLOTS
        slots = [self.connect(slot, 0) for slot in range(SLOTS)]
        everyone = list(slots)
        for user, names in zip(slots, first_joins):
            for name in names:
                user.session.handle(f"/join {name}")
                self.model.join(user, name)
        for step in steps:
            kind = step[0]
            if kind == "flush":
                self.clock.advance(0)
                self.check(everyone)
                continue
            user = slots[step[1]]
            if kind == "connect":
                if not user.alive:
                    generations[step[1]] += 1
                    slots[step[1]] = self.connect(step[1], generations[step[1]])
                    everyone.append(slots[step[1]])
                continue
            if not user.alive:
                continue
            handle = user.session.handle
            if kind == "join":
                handle(f"/join {step[2]}")
                self.model.join(user, step[2])
            elif kind == "part":
                handle(f"/part {step[2]} {step[3]}".rstrip())
                self.model.part(user, step[2], step[3])
            elif kind == "nick":
                handle(f"/nick {step[2]}")
                self.model.rename(user, step[2], everyone)
            elif kind == "say":
                handle(step[2])
                self.model.line(user, "said", step[2])
            elif kind == "me":
                handle(f"/me {step[2]}")
                self.model.line(user, "emote", step[2])
            elif kind == "topic":
                handle(f"/topic {step[2]}")
                self.model.line(user, "topic", step[2], with_self=True)
            elif kind == "quit":
                handle(f"/quit {step[2]}".rstrip())
                self.model.quit(user, step[2])
        self.clock.advance(0)
        self.check(everyone)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for user in everyone:
            self.assertEqual(user.participant.closed, [] if user.alive else ["goodbye"])
