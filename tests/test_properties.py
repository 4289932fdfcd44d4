"""
Property tests: scrub never lets a control through, the nick registry stays consistent with a
simple model, and no line a user types can crash a session or reach another user as a control.
"""

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.errors import InvalidNick, NickInUse
from chatservice.core.flood import FloodPolicy
from chatservice.core.limits import Limits
from chatservice.core.nicks import NickRegistry
from chatservice.core.render import as_line, scrub
from chatservice.core.room import Room
from chatservice.core.session import Session
from tests.fakes import FakeParticipant

PROPERTY = settings(deadline=None, max_examples=200)

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
                         "/MSG BOB ", "/", "/nick\x1b[31m", "/m\x00e "]),
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
        room = Room(clock)
        limits = Limits(flood=FloodPolicy(rate=0, burst=0))
        bob = FakeParticipant(None)
        Session(bob, room, registry, clock, limits).start("bob")
        mallory = FakeParticipant(None, "udp")
        session = Session(mallory, room, registry, clock, limits)
        session.start()
        if alice_first:
            session.handle("alice")
        for line in lines:
            session.handle(line)
            clock.advance(0.125)
        clock.advance(0)
        for event in bob.events:
            shown = as_line(event)
            self.assertEqual([char for char in shown if is_control(char)], [], shown)
            self.assertNotIn("\x1b", shown)
        self.assertEqual(bob.closed, [])
        self.assertIs(room.find("bob"), bob)
        if session.joined:
            self.assertIs(registry.holder(mallory.nick), session)
            self.assertEqual(len(registry), 2)
        else:
            self.assertEqual(list(registry), ["bob"])
