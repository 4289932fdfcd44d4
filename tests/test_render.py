"""
Tests for L{chatservice.core.render}: the lines users read for every event and reply, the room
mark, history times, the render cache and the batch encoder, and scrubbing of control characters.
"""

import calendar
import os
import time

from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.batch import Batch, Shared
from chatservice.core.events import (
    CurrentRoom,
    Emote,
    HelpText,
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
    RoomParted,
    Said,
    TopicChanged,
    TopicIs,
    Welcome,
    WhoList,
)
from chatservice.core.render import ROOMS_SHOWN, RenderCache, as_bytes, as_line, scrub

#: 2024-03-01 08:32:00 UTC, which is 14:02 in L{LocalTimeMixin}'s zone.
T = calendar.timegm((2024, 3, 1, 8, 32, 0))


def said(text="hi there", nick="alice", room="#lobby", id=1, at=T):
    return Said(id, at, room, nick, text)


class AsLineTests(SynchronousTestCase):
    """as_line() renders each event kind in its one format; the current room shows no mark."""

    def test_said(self):
        """Said is NAME: text."""
        self.assertEqual(as_line(said(), "#lobby"), "alice: hi there")

    def test_emote(self):
        """Emote is * NAME text."""
        self.assertEqual(as_line(Emote(1, T, "#lobby", "alice", "waves"), "#lobby"),
                         "* alice waves")

    def test_joined(self):
        """Joined is * NAME joined."""
        self.assertEqual(as_line(Joined(1, T, "#lobby", "alice", "tcp"), "#lobby"),
                         "* alice joined")

    def test_parted(self):
        """Parted is * NAME left the room, with the reason when there is one."""
        self.assertEqual(as_line(Parted(1, T, "#lobby", "bob", "lunch"), "#lobby"),
                         "* bob left the room (lunch)")
        self.assertEqual(as_line(Parted(1, T, "#lobby", "bob", ""), "#lobby"),
                         "* bob left the room")

    def test_topic_changed(self):
        """TopicChanged is * NAME set the topic: text; an empty text clears it."""
        self.assertEqual(as_line(TopicChanged(1, T, "#dev", "alice", "ship it"), "#dev"),
                         "* alice set the topic: ship it")
        self.assertEqual(as_line(TopicChanged(1, T, "#dev", "alice", ""), "#dev"),
                         "* alice cleared the topic")

    def test_left(self):
        """Left is * NAME left (reason)."""
        self.assertEqual(as_line(Left(1, T, ("#lobby",), "alice", "quit"), "#lobby"),
                         "* alice left (quit)")

    def test_renamed(self):
        """Renamed is * OLD is now known as NEW."""
        self.assertEqual(as_line(Renamed(1, T, ("#lobby",), "alice", "alicia"), "#lobby"),
                         "* alice is now known as alicia")

    def test_private(self):
        """Private is [private] SENDER: text."""
        self.assertEqual(as_line(Private(1, T, "alice", "bob", "psst")), "[private] alice: psst")

    def test_private_sent(self):
        """The sender's copy of a private line is -> RECIPIENT: text."""
        self.assertEqual(as_line(PrivateSent(1, T, "bob", "psst")), "-> bob: psst")

    def test_notice(self):
        """Notice is * text."""
        self.assertEqual(as_line(Notice("type /help for commands")), "* type /help for commands")

    def test_refusal(self):
        """Refusal is ! text; the kind is for other front-ends and is not shown."""
        self.assertEqual(as_line(Refusal("no-such-user", "no such user: carol")),
                         "! no such user: carol")

    def test_unknown_value(self):
        """Something that is not an event is a bug, not a blank line."""
        self.assertRaises(TypeError, as_line, object())


class RepliesTests(SynchronousTestCase):
    """The replies to one user, each a value with its own rendering."""

    def test_welcome(self):
        """Welcome names the nick, the room and who is there."""
        self.assertEqual(as_line(Welcome("alice", "#lobby", 2, ("alice", "bob"))),
                         "* you are alice; 2 in #lobby: alice, bob")

    def test_welcome_alone(self):
        self.assertEqual(as_line(Welcome("alice", "#lobby", 1, ("alice",))),
                         "* you are alice; 1 in #lobby: alice")

    def test_welcome_with_more_than_shown(self):
        """Members beyond those shown are counted, and /who is named for the rest."""
        self.assertEqual(
            as_line(Welcome("zed", "#lobby", 25, ("a", "b"))),
            "* you are zed; 25 in #lobby: a, b and 23 more (/who lists all)",
        )

    def test_room_joined(self):
        """RoomJoined names the room, who is there and the topic when there is one."""
        self.assertEqual(as_line(RoomJoined("#dev", "", 1, ("alice",))),
                         "* you joined #dev; 1 here: alice")
        self.assertEqual(as_line(RoomJoined("#dev", "ship it", 2, ("bob", "alice"))),
                         "* you joined #dev; 2 here: bob, alice; topic: ship it")
        self.assertEqual(as_line(RoomJoined("#dev", "", 30, ("bob",))),
                         "* you joined #dev; 30 here: bob and 29 more (/who lists all)")

    def test_room_parted(self):
        """RoomParted says where lines go now, or that they go nowhere."""
        self.assertEqual(as_line(RoomParted("#dev", "#lobby")),
                         "* you left #dev; your lines go to #lobby")
        self.assertEqual(as_line(RoomParted("#dev", None)),
                         "* you left #dev; you are in no room now (/join #room)")

    def test_current_room(self):
        self.assertEqual(as_line(CurrentRoom("#dev")), "* your lines go to #dev")

    def test_who_list(self):
        """WhoList names everyone with their transport, in joining order."""
        self.assertEqual(as_line(WhoList("#lobby", (("alice", "tcp"), ("bob", "udp")))),
                         "* 2 in #lobby: alice (tcp), bob (udp)")

    def test_room_list(self):
        """RoomList is one line per room under a count, the topic when there is one."""
        event = RoomList((("#dev", 2, "ship it"), ("#lobby", 3, "")))
        self.assertEqual(as_line(event), "* 2 rooms:\n*   #dev (2): ship it\n*   #lobby (3)")

    def test_room_list_is_cut_after_rooms_shown(self):
        """More than ROOMS_SHOWN rooms: the first ones, then a count of the rest and how to narrow
        the list, so one answer cannot fill a UDP user's window of unacknowledged frames."""
        rooms = tuple(("#r%03d" % i, 1, "") for i in range(ROOMS_SHOWN + 5))
        lines = as_line(RoomList(rooms)).split("\n")
        self.assertEqual(len(lines), ROOMS_SHOWN + 2)
        self.assertEqual(lines[0], "* %d rooms:" % (ROOMS_SHOWN + 5))
        self.assertEqual(lines[-2], "*   #r%03d (1)" % (ROOMS_SHOWN - 1))
        self.assertEqual(lines[-1],
                         "*   ... and 5 more (/rooms TEXT lists those with TEXT in the name)")

    def test_room_list_of_one(self):
        """One room is 'room', not 'rooms'."""
        self.assertEqual(as_line(RoomList((("#lobby", 1, ""),))), "* 1 room:\n*   #lobby (1)")

    def test_topic_is(self):
        """TopicIs gives the topic and who set it, or says there is none."""
        self.assertEqual(as_line(TopicIs("#dev", "ship it", "alice", T)),
                         "* topic of #dev: ship it (set by alice)")
        self.assertEqual(as_line(TopicIs("#dev", "", "", 0.0)), "* #dev has no topic")

    def test_help_text(self):
        """HelpText is one '* ' line per line of text, keeping the text's own spacing."""
        self.assertEqual(as_line(HelpText(("commands:", "  /help   this list"))),
                         "* commands:\n*   /help   this list")

    def test_history_frame(self):
        """A history block opens with the room's name and closes with one line."""
        self.assertEqual(as_line(HistoryStart("#dev", 3)), "* history of #dev")
        self.assertEqual(as_line(HistoryEnd("#dev")), "* end of history")

    def test_replies_carry_no_room_mark(self):
        """Replies and private lines are never marked, whatever the current room."""
        for event in [Notice("x"), Refusal("refused", "x"), CurrentRoom("#dev"),
                      HistoryStart("#dev", 1), Private(1, T, "a", "b", "x"),
                      PrivateSent(1, T, "b", "x")]:
            self.assertFalse(as_line(event, "#lobby").startswith("[#"), event)
            self.assertEqual(as_line(event, "#lobby"), as_line(event, None))


class RoomMarkTests(SynchronousTestCase):
    """Room events from a room other than the current one carry [#room]; user events never."""

    def test_room_events_from_another_room_are_marked(self):
        """Each room event kind from #dev, seen by a user whose lines go to #lobby."""
        cases = [
            (Said(1, T, "#dev", "alice", "hi"), "[#dev] alice: hi"),
            (Emote(1, T, "#dev", "alice", "waves"), "[#dev] * alice waves"),
            (Joined(1, T, "#dev", "bob", "tcp"), "[#dev] * bob joined"),
            (Parted(1, T, "#dev", "bob", "bye"), "[#dev] * bob left the room (bye)"),
            (TopicChanged(1, T, "#dev", "bob", "x"), "[#dev] * bob set the topic: x"),
        ]
        for event, line in cases:
            self.assertEqual(as_line(event, "#lobby"), line)
            self.assertEqual(as_line(event, "#dev"), line[len("[#dev] "):])

    def test_no_current_room_marks_every_room_event(self):
        """A user in no room (or before joining) sees every room event marked."""
        self.assertEqual(as_line(said(room="#dev")), "[#dev] alice: hi there")
        self.assertEqual(as_line(said(room="#dev"), None), "[#dev] alice: hi there")

    def test_mark_uses_the_event_room_as_shown(self):
        """The mark is the room's display name, as the event carries it."""
        self.assertEqual(as_line(said(room="#Dev"), "#lobby"), "[#Dev] alice: hi there")

    def test_user_events_are_not_marked(self):
        """A rename or a quit concerns the user, not a room: shown once, unmarked."""
        self.assertEqual(as_line(Renamed(1, T, ("#dev", "#ops"), "a", "b"), "#lobby"),
                         "* a is now known as b")
        self.assertEqual(as_line(Left(1, T, ("#dev",), "a", "quit"), "#lobby"),
                         "* a left (quit)")


class LocalTimeMixin:
    """Run in a fixed zone, UTC+05:30 (no tzdata needed), and restore the zone afterwards."""

    ZONE = "XST-05:30"

    def setUp(self):
        super().setUp()
        saved = os.environ.get("TZ")

        def restore():
            if saved is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = saved
            time.tzset()

        self.addCleanup(restore)
        os.environ["TZ"] = self.ZONE
        time.tzset()


class ReplayedTests(LocalTimeMixin, SynchronousTestCase):
    """A replayed line shows its original time, in local time, with the date when not today."""

    def test_same_day_shows_time(self):
        """[HH:MM] and the line as it was shown live."""
        self.assertEqual(as_line(Replayed(said(at=T), T + 3600)), "[14:02] alice: hi there")

    def test_other_kinds(self):
        """The line after the time is the event's own rendering, without a room mark."""
        self.assertEqual(as_line(Replayed(Emote(1, T, "#dev", "alice", "waves"), T), "#lobby"),
                         "[14:02] * alice waves")
        self.assertEqual(as_line(Replayed(said(room="#dev"), T), "#lobby"),
                         "[14:02] alice: hi there")

    def test_other_day_shows_date(self):
        """A line from another day shows YYYY-MM-DD HH:MM."""
        self.assertEqual(as_line(Replayed(said(at=T), T + 86400)),
                         "[2024-03-01 14:02] alice: hi there")
        self.assertEqual(as_line(Replayed(said(at=T - 366 * 86400), T)),
                         "[2023-03-01 14:02] alice: hi there")

    def test_day_is_the_local_day(self):
        """'Today' is the local calendar day, not UTC's."""
        # 18:00 and 19:00 UTC are the same UTC day, but 23:30 and 00:30 the next day here.
        late = calendar.timegm((2024, 3, 1, 18, 0, 0))
        self.assertEqual(as_line(Replayed(said(at=late), late + 3600)),
                         "[2024-03-01 23:30] alice: hi there")
        # 20:00 UTC on the 1st and 10:00 UTC on the 2nd are both the 2nd here.
        early = calendar.timegm((2024, 3, 1, 20, 0, 0))
        self.assertEqual(as_line(Replayed(said(at=early), early + 14 * 3600)),
                         "[01:30] alice: hi there")


class AsBytesTests(SynchronousTestCase):
    """as_bytes() is the line in UTF-8 with CRLF."""

    def test_ends_with_crlf(self):
        """The bytes are the line and CRLF."""
        self.assertEqual(as_bytes(said("hi"), current="#lobby"), b"alice: hi\r\n")

    def test_marked(self):
        """The room mark is there too, unless the event is from the current room."""
        self.assertEqual(as_bytes(said("hi", room="#dev"), current="#lobby"),
                         b"[#dev] alice: hi\r\n")

    def test_utf8(self):
        """Non-ASCII text is encoded as UTF-8."""
        self.assertEqual(as_bytes(said("h\u00e9 \u4e2d"), current="#lobby"),
                         b"alice: h\xc3\xa9 \xe4\xb8\xad\r\n")

    def test_same_for_equal_events(self):
        """Equal events render to equal bytes."""
        left = Left(1, T, ("#lobby",), "bob", "quit")
        self.assertEqual(as_bytes(left), as_bytes(Left(1, T, ("#lobby",), "bob", "quit")))
        self.assertEqual(as_bytes(left), b"* bob left (quit)\r\n")

    def test_several_lines_each_end_in_the_line_end(self):
        """A multi-line reply has every line ended by the line end."""
        event = RoomList((("#dev", 2, ""), ("#lobby", 3, "")))
        self.assertEqual(as_bytes(event), b"* 2 rooms:\r\n*   #dev (2)\r\n*   #lobby (3)\r\n")
        self.assertEqual(as_bytes(HelpText(("a", "b")), line_end=b"\n"), b"* a\n* b\n")

    def test_no_line_end_keeps_lf_inside(self):
        """UDP sends one datagram per event, without a line end: the lines stay LF-separated."""
        self.assertEqual(as_bytes(HelpText(("a", "b")), line_end=b""), b"* a\n* b")


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
    """RenderCache encodes an event once per way of seeing it and stays within its bounds."""

    def test_same_event_encoded_once(self):
        cache = RenderCache()
        event = said("hi")
        self.assertIs(cache(event, "#lobby"), cache(event, "#lobby"))
        self.assertEqual(cache(event, "#lobby"), b"alice: hi\r\n")

    def test_each_way_of_seeing(self):
        """The same event is marked for a user elsewhere and unmarked for one in its room."""
        cache = RenderCache()
        event = said("hi", room="#dev")
        self.assertEqual(cache(event, "#lobby"), b"[#dev] alice: hi\r\n")
        self.assertEqual(cache(event, "#dev"), b"alice: hi\r\n")
        self.assertEqual(cache(event, "#ops"), b"[#dev] alice: hi\r\n")
        self.assertEqual(len(cache), 2)

    def test_equal_but_distinct_events_each_render_right(self):
        cache = RenderCache(line_end=b"")
        self.assertEqual(cache(Said(1, T, "#lobby", "a", "x"), "#lobby"), b"a: x")
        self.assertEqual(cache(Said(1, T, "#lobby", "b", "x"), "#lobby"), b"b: x")

    def test_bounded_by_bytes(self):
        """4000-byte lines never make the cache hold more than its byte bound."""
        cache = RenderCache(max_bytes=100_000)
        events = [said("x" * 4000, id=n) for n in range(1000)]
        for event in events:
            cache(event, "#lobby")
            self.assertLessEqual(cache.size_bytes, 100_000)
        self.assertLess(len(cache), 30)

    def test_bounded_by_entries(self):
        cache = RenderCache(size=10)
        events = [said(str(n), id=n) for n in range(100)]
        for event in events:
            cache(event, "#lobby")
            self.assertLessEqual(len(cache), 10)


class CountingCache(RenderCache):
    """A RenderCache that counts the events it renders (cache hits included)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def __call__(self, event, current=None):
        self.calls += 1
        return super().__call__(event, current)


class EncodeTests(SynchronousTestCase):
    """encode() is the concatenation of the batch's lines; a shared run is encoded once."""

    def setUp(self):
        self.events = (
            said("one", nick="bob", id=1),
            said("two", room="#dev", id=2),
            Joined(3, T, "#lobby", "carol", "udp"),
            Emote(4, T, "#dev", "bob", "waves"),
            said("five", nick="carol", id=5),
            RoomList((("#dev", 2, ""), ("#lobby", 3, ""))),  # several lines in one entry
            said("seven", id=7),
        )
        self.shared = Shared(self.events)

    def expected(self, batch, current, line_end=b"\r\n"):
        return b"".join(as_bytes(event, line_end, current) for event in batch)

    def test_whole_run(self):
        """A batch that is the whole run is the run's encoding."""
        cache = RenderCache()
        batch = Batch(((self.shared, 0, len(self.events)),))
        self.assertEqual(cache.encode(batch, "#lobby"), self.expected(batch, "#lobby"))

    def test_slices_are_the_concatenation(self):
        """Every way of slicing the run, with private entries between, gives exactly the lines."""
        mine = Shared((PrivateSent(9, T, "bob", "psst"), Notice("hello")))
        n = len(self.events)
        layouts = [
            ((self.shared, 0, 3),),
            ((self.shared, 2, 5),),
            ((self.shared, 0, 2), (self.shared, 3, n)),  # the sender's own line cut out
            ((self.shared, 0, 1), (mine, 0, 1), (self.shared, 1, 4), (mine, 1, 2),
             (self.shared, 5, n)),
            ((mine, 0, 2), (self.shared, n - 1, n)),
            ((self.shared, 4, 4), (mine, 0, 1)),  # an empty slice adds nothing
        ]
        for current in ["#lobby", "#dev", None]:
            cache = RenderCache()
            for parts in layouts:
                batch = Batch(parts)
                self.assertEqual(cache.encode(batch, current), self.expected(batch, current),
                                 (current, parts))

    def test_run_encoded_once_for_many_batches(self):
        """A hundred users' slices of one run render each of its events once, cached on the run."""
        cache = CountingCache()
        n = len(self.events)
        for user in range(100):
            start = user % n
            batch = Batch(((self.shared, 0, start), (self.shared, min(start + 1, n), n)))
            self.assertEqual(cache.encode(batch, "#lobby"), self.expected(batch, "#lobby"))
        self.assertEqual(cache.calls, n)
        self.assertEqual(len(self.shared.encoded), 1)

    def test_once_per_way_of_seeing(self):
        """Users in another current room get the run marked; each view is built once."""
        cache = CountingCache()
        batch = Batch(((self.shared, 0, len(self.events)),))
        for current in ["#lobby", "#dev", "#lobby", "#dev"]:
            self.assertEqual(cache.encode(batch, current), self.expected(batch, current))
        self.assertEqual(cache.calls, 2 * len(self.events))
        self.assertEqual(len(self.shared.encoded), 2)

    def test_caches_with_other_line_ends_do_not_share(self):
        """Two front-ends with different line ends each get their own encoding of a shared run."""
        crlf, bare = RenderCache(), RenderCache(line_end=b"\n")
        batch = Batch(((self.shared, 1, 4),))
        self.assertEqual(crlf.encode(batch, "#lobby"), self.expected(batch, "#lobby"))
        self.assertEqual(bare.encode(batch, "#lobby"), self.expected(batch, "#lobby", b"\n"))
        self.assertEqual(crlf.encode(batch, "#lobby"), self.expected(batch, "#lobby"))

    def test_batch_of(self):
        """A batch of events shared with nobody (replies) encodes like any other."""
        cache = RenderCache()
        batch = Batch.of([Notice("a"), Refusal("refused", "b")])
        self.assertEqual(cache.encode(batch, "#lobby"), b"* a\r\n! b\r\n")
        self.assertEqual(cache.encode(Batch.of([]), "#lobby"), b"")
