"""
Tests for L{chatservice.core.render}: the lines users read, and scrubbing of control characters.
"""

from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.events import Emote, Joined, Left, Notice, Private, PrivateSent, Refusal, Renamed, Said
from chatservice.core.render import RenderCache, as_bytes, as_line, scrub


class AsLineTests(SynchronousTestCase):
    """as_line() renders each event kind in its one format."""

    def test_said(self):
        """Said is NAME: text."""
        self.assertEqual(as_line(Said("alice", "hi there")), "alice: hi there")

    def test_joined(self):
        """Joined is * NAME joined."""
        self.assertEqual(as_line(Joined("alice", "tcp")), "* alice joined")

    def test_left(self):
        """Left is * NAME left (reason)."""
        self.assertEqual(as_line(Left("alice", "quit")), "* alice left (quit)")

    def test_renamed(self):
        """Renamed is * OLD is now known as NEW."""
        self.assertEqual(as_line(Renamed("alice", "alicia")), "* alice is now known as alicia")

    def test_emote(self):
        """Emote is * NAME text."""
        self.assertEqual(as_line(Emote("alice", "waves")), "* alice waves")

    def test_private(self):
        """Private is [private] SENDER: text."""
        self.assertEqual(as_line(Private("alice", "bob", "psst")), "[private] alice: psst")

    def test_private_sent(self):
        """The sender's copy of a private line is -> RECIPIENT: text."""
        self.assertEqual(as_line(PrivateSent("bob", "psst")), "-> bob: psst")

    def test_notice(self):
        """Notice is * text."""
        self.assertEqual(as_line(Notice("type /help for commands")), "* type /help for commands")

    def test_refusal(self):
        """Refusal is ! text."""
        self.assertEqual(as_line(Refusal("no such user: carol")), "! no such user: carol")


class AsBytesTests(SynchronousTestCase):
    """as_bytes() is the line in UTF-8 with CRLF."""

    def test_ends_with_crlf(self):
        """The bytes are the line and CRLF."""
        self.assertEqual(as_bytes(Said("alice", "hi")), b"alice: hi\r\n")

    def test_utf8(self):
        """Non-ASCII text is encoded as UTF-8."""
        self.assertEqual(as_bytes(Said("alice", "h\u00e9 \u4e2d")), b"alice: h\xc3\xa9 \xe4\xb8\xad\r\n")

    def test_same_for_equal_events(self):
        """Equal events render to equal bytes."""
        self.assertEqual(as_bytes(Left("bob", "quit")), as_bytes(Left("bob", "quit")))
        self.assertEqual(as_bytes(Left("bob", "quit")), b"* bob left (quit)\r\n")


class ScrubTests(SynchronousTestCase):
    """scrub() removes what could drive a terminal and keeps text."""

    def test_plain_text_unchanged(self):
        """Printable ASCII comes back as it is."""
        self.assertEqual(scrub("hello, world! [x] {y} ~"), "hello, world! [x] {y} ~")

    def test_unicode_unchanged(self):
        """Accents, CJK and emoji are text, not controls."""
        text = "caf\u00e9 \u4e2d\u6587 \U0001f600\U0001f44d"
        self.assertEqual(scrub(text), text)

    def test_unicode_kept_beside_controls(self):
        """Scrubbing controls keeps the Unicode around them."""
        self.assertEqual(scrub("\x1b[1m\u00e9\x00\u4e2d\u6587\x7f\U0001f600"), "\u00e9\u4e2d\u6587\U0001f600")

    def test_removes_c0(self):
        """C0 controls (NUL, BEL, BS, CR, LF...) are removed."""
        self.assertEqual(scrub("a\x00b\x07c\x08d\re\nf\x1fg"), "abcdefg")

    def test_keeps_tab(self):
        """Tab is kept."""
        self.assertEqual(scrub("a\tb"), "a\tb")
        self.assertEqual(scrub("a\tb\x00"), "a\tb")

    def test_removes_bidi_overrides_and_isolates(self):
        """U+202A-U+202E and U+2066-U+2069 would reorder the rest of the line: removed."""
        controls = "".join(chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
        self.assertEqual(scrub(f"a{controls}b"), "ab")
        self.assertEqual(scrub("evil\u202etxt.exe"), "eviltxt.exe")

    def test_keeps_other_format_characters(self):
        """Zero-width joiners (emoji sequences) and LRM/RLM marks stay: they reorder nothing."""
        self.assertEqual(scrub("\U0001F469\u200d\U0001F4BB \u200e"), "\U0001F469\u200d\U0001F4BB \u200e")

    def test_removes_del(self):
        """DEL is removed."""
        self.assertEqual(scrub("a\x7fb"), "ab")

    def test_removes_c1(self):
        """C1 controls (U+0080 to U+009F) are removed."""
        self.assertEqual(scrub("a\x80b\x85c\x8dd\x96e"), "abcde")

    def test_removes_csi_sequence(self):
        """A CSI colour sequence goes as a whole."""
        self.assertEqual(scrub("\x1b[31mred\x1b[0m text"), "red text")

    def test_removes_csi_with_parameters(self):
        """CSI sequences with several parameters and private markers go as a whole."""
        self.assertEqual(scrub("a\x1b[2J\x1b[1;31;42mb\x1b[?25lc"), "abc")

    def test_removes_osc_ending_in_bel(self):
        """An OSC title sequence ending in BEL goes as a whole."""
        self.assertEqual(scrub("\x1b]0;title\x07after"), "after")

    def test_removes_osc_ending_in_st(self):
        """An OSC sequence ending in ESC backslash goes as a whole."""
        self.assertEqual(scrub("\x1b]0;title\x1b\\after"), "after")

    def test_removes_8bit_csi(self):
        """The 8-bit CSI form goes as a whole."""
        self.assertEqual(scrub("\x9b2Jafter"), "after")

    def test_removes_lone_escape(self):
        """An ESC with nothing after it goes."""
        self.assertEqual(scrub("before\x1b"), "before")

    def test_removes_two_character_escape(self):
        """A two-character escape (ESC c, full reset) goes as a whole."""
        self.assertEqual(scrub("a\x1bcb"), "ab")


class RenderCacheTests(SynchronousTestCase):
    """RenderCache encodes an event once and stays within its bounds."""

    def test_same_event_encoded_once(self):
        cache = RenderCache()
        event = Said("alice", "hi")
        self.assertIs(cache(event), cache(event))
        self.assertEqual(cache(event), b"alice: hi\r\n")

    def test_equal_but_distinct_events_each_render_right(self):
        cache = RenderCache(line_end=b"")
        self.assertEqual(cache(Said("a", "x")), b"a: x")
        self.assertEqual(cache(Said("b", "x")), b"b: x")

    def test_bounded_by_bytes(self):
        """4000-byte lines never make the cache hold more than its byte bound."""
        cache = RenderCache(max_bytes=100_000)
        events = [Said("alice", "x" * 4000) for _ in range(1000)]
        for event in events:
            cache(event)
            self.assertLessEqual(cache.size_bytes, 100_000)
        self.assertLess(len(cache), 30)

    def test_bounded_by_entries(self):
        cache = RenderCache(size=10)
        events = [Said("alice", str(i)) for i in range(100)]
        for event in events:
            cache(event)
            self.assertLessEqual(len(cache), 10)
