"""
Tests for L{chatservice.frontends.reliable}: framing, retransmission on a fake clock, ordered exactly-once
delivery, and two channels talking through a deterministic lossy link.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from chatservice.frontends.reliable import (
    HEADER_ROOM,
    MAX_SELECTIVE,
    MAX_SEQ,
    SEQ_MODULUS,
    AckFrame,
    ControlFrame,
    DataFrame,
    MalformedFrame,
    ReliableChannel,
    encode_ack,
    encode_data,
    parse_frame,
    split_utf8,
)
from tests.lossy import LossyLink


class FramingTests(SynchronousTestCase):
    """parse_frame, encode_data and encode_ack agree on the wire format."""

    def test_data_round_trip(self):
        self.assertEqual(encode_data(12, b"alice: hi"), b"12 alice: hi")
        self.assertEqual(parse_frame(b"12 alice: hi"), DataFrame(12, False, b"alice: hi"))

    def test_continued_data_round_trip(self):
        self.assertEqual(encode_data(7, b"part", more=True), b"7+ part")
        self.assertEqual(parse_frame(b"7+ part"), DataFrame(7, True, b"part"))

    def test_payload_is_verbatim(self):
        frame = parse_frame(b"3  two  spaces\r\n")
        self.assertEqual(frame, DataFrame(3, False, b" two  spaces\r\n"))
        self.assertEqual(parse_frame(b"4 "), DataFrame(4, False, b""))

    def test_largest_seq(self):
        self.assertEqual(MAX_SEQ, 2**32 - 1)
        self.assertEqual(parse_frame(b"%d x" % MAX_SEQ), DataFrame(MAX_SEQ, False, b"x"))

    def test_seq_zero_follows_the_largest(self):
        """After the wrap seq 0 is an ordinary data seq."""
        self.assertEqual(encode_data(0, b"x"), b"0 x")
        self.assertEqual(parse_frame(b"0 x"), DataFrame(0, False, b"x"))

    def test_encode_data_refuses_bad_seq(self):
        self.assertRaises(ValueError, encode_data, -1, b"x")
        self.assertRaises(ValueError, encode_data, MAX_SEQ + 1, b"x")

    def test_encode_ack_refuses_bad_seqs(self):
        self.assertRaises(ValueError, encode_ack, MAX_SEQ + 1)
        self.assertRaises(ValueError, encode_ack, 5, [5])
        self.assertRaises(ValueError, encode_ack, 5, [4])

    def test_ack_round_trip(self):
        self.assertEqual(encode_ack(5), b"ACK 5")
        self.assertEqual(encode_ack(5, {9, 7}), b"ACK 5 7 9")
        self.assertEqual(parse_frame(b"ACK 5"), AckFrame(5, ()))
        self.assertEqual(parse_frame(b"ACK 0 7 9"), AckFrame(0, (7, 9)))

    def test_ack_selective_capped(self):
        ack = encode_ack(1, range(100, 2, -1))
        frame = parse_frame(ack)
        self.assertEqual(frame.selective, tuple(range(3, 3 + MAX_SELECTIVE)))

    def test_control_frames(self):
        self.assertEqual(parse_frame(b"HELLO"), ControlFrame("HELLO", ()))
        self.assertEqual(parse_frame(b"JOIN alice\n"), ControlFrame("JOIN", (b"alice",)))
        self.assertEqual(parse_frame(b"TOKEN abc 3"), ControlFrame("TOKEN", (b"abc", b"3")))

    def test_error_line(self):
        self.assertEqual(parse_frame(b"! nick in use"), ControlFrame("!", (b"nick in use",)))

    def test_malformed(self):
        for datagram in [
            b"", b" ", b"\n", b"12", b"00 x", b"01 x", b"%d x" % (MAX_SEQ + 1), b"99999999999 x",
            b"12x y", b"12++ y", b"+ y", b"-1 x", b"hello", b"Hello", b"\xff\xfe", b"ACK",
            b"ACK x", b"ACK -1", b"ACK 5 3", b"ACK 5 5", b"ACK 0 0",
            b"ACK 0 " + b" ".join(b"%d" % n for n in range(1, MAX_SELECTIVE + 2)),
        ]:
            self.assertRaises(MalformedFrame, parse_frame, datagram)

    @given(st.binary(max_size=64))
    def test_arbitrary_bytes_parse_or_malformed(self, datagram):
        try:
            frame = parse_frame(datagram)
        except MalformedFrame:
            return
        self.assertIsInstance(frame, (DataFrame, AckFrame, ControlFrame))

    @given(st.integers(0, MAX_SEQ), st.binary(max_size=64), st.booleans())
    def test_any_data_round_trips(self, seq, payload, more):
        frame = parse_frame(encode_data(seq, payload, more))
        self.assertEqual(frame, DataFrame(seq, more, payload))

    @given(st.integers(0, MAX_SEQ), st.sets(st.integers(1, 2**31 - 1), max_size=40))
    def test_any_ack_round_trips(self, cumulative, distances):
        """Selective seqs are any seqs after the cumulative one, the nearest 32 kept in order."""
        selective = {(cumulative + d) % SEQ_MODULUS for d in distances}
        frame = parse_frame(encode_ack(cumulative, selective))
        nearest = [(cumulative + d) % SEQ_MODULUS for d in sorted(distances)[:MAX_SELECTIVE]]
        self.assertEqual(frame, AckFrame(cumulative, tuple(nearest)))


class SplitTests(SynchronousTestCase):
    """split_utf8 cuts long lines at character boundaries."""

    def test_short_is_one_piece(self):
        self.assertEqual(split_utf8(b"", 4), [b""])
        self.assertEqual(split_utf8(b"abcd", 4), [b"abcd"])

    def test_never_inside_a_character(self):
        text = "a\u00e9\u20ac\U0001f600".encode("utf-8")  # 1, 2, 3 and 4 byte characters
        self.assertEqual(split_utf8(text, 4), [b"a\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80"])

    def test_not_utf8_still_bounded(self):
        pieces = split_utf8(b"\x80" * 10, 4)
        self.assertEqual(pieces, [b"\x80" * 4, b"\x80" * 4, b"\x80" * 2])

    @given(st.text(max_size=200), st.integers(4, 20))
    def test_pieces_decode_and_rejoin(self, text, limit):
        data = text.encode("utf-8")
        pieces = split_utf8(data, limit)
        self.assertEqual(b"".join(pieces), data)
        for piece in pieces:
            self.assertLessEqual(len(piece), limit)
            piece.decode("utf-8")


class ChannelTestMixin:
    """Builds a channel on a fake clock and records what it sends, delivers and gives up."""

    def channel(self, **options):
        self.clock = Clock()
        self.wire = []  # (time, datagram)
        self.lines = []
        self.reasons = []  # (time, reason)
        return ReliableChannel(
            self.clock,
            lambda datagram: self.wire.append((self.clock.seconds(), datagram)),
            self.lines.append,
            lambda reason: self.reasons.append((self.clock.seconds(), reason)),
            **options,
        )

    def sent(self):
        """Datagrams sent so far, forgetting them."""
        datagrams = [datagram for _, datagram in self.wire]
        del self.wire[:]
        return datagrams


class RetransmitTests(ChannelTestMixin, SynchronousTestCase):
    """Unacknowledged lines are resent on the clock with backoff until acked or given up."""

    def test_sent_at_once(self):
        channel = self.channel()
        channel.send_line(b"hi")
        channel.send_line(b"there")
        self.assertEqual(self.wire, [(0, b"1 hi"), (0, b"2 there")])
        self.assertEqual(channel.sent, 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_backoff_doubles_up_to_cap_then_gives_up(self):
        channel = self.channel(initial_rto=0.25, max_rto=4.0, max_tries=8)
        channel.send_line(b"hi")
        self.clock.pump([0.25] * 100)
        times = [when for when, datagram in self.wire if datagram == b"1 hi"]
        self.assertEqual(times, [0, 0.25, 0.75, 1.75, 3.75, 7.75, 11.75, 15.75])
        self.assertEqual(self.reasons, [(19.75, "timed out")])
        self.assertEqual(channel.retransmitted, 7)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(channel.closed)

    def test_nothing_after_give_up(self):
        channel = self.channel(max_tries=1)
        channel.send_line(b"hi")
        self.clock.advance(0.25)
        self.assertEqual(self.reasons, [(0.25, "timed out")])
        self.sent()
        channel.send_line(b"more")
        channel.frame_received(DataFrame(1, False, b"late"))
        self.clock.advance(100)
        self.assertEqual((self.sent(), self.lines, len(self.reasons)), ([], [], 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_give_up_is_logged(self):
        channel = self.channel(max_tries=1)
        channel.send_line(b"hi")
        with capturedLogs() as events:
            self.clock.advance(0.25)
        [event] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(event["reason"], "timed out")

    def test_ack_cancels_retransmit(self):
        channel = self.channel()
        channel.send_line(b"hi")
        channel.frame_received(AckFrame(1))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.sent(), [b"1 hi"])
        self.assertEqual(channel.retransmitted, 0)

    def test_cumulative_ack(self):
        channel = self.channel()
        for line in [b"a", b"b", b"c"]:
            channel.send_line(line)
        self.sent()
        channel.frame_received(AckFrame(2))
        self.assertEqual(channel.outstanding, 1)
        self.clock.advance(0.25)
        self.assertEqual(self.sent(), [b"3 c"])

    def test_selective_ack(self):
        channel = self.channel()
        for line in [b"a", b"b", b"c", b"d", b"e"]:
            channel.send_line(line)
        self.sent()
        channel.frame_received(AckFrame(1, (3, 5)))
        self.clock.advance(0.25)
        self.assertEqual(self.sent(), [b"2 b", b"4 d"])

    def test_ack_of_unsent_seqs_is_harmless(self):
        channel = self.channel()
        channel.send_line(b"a")
        channel.frame_received(AckFrame(0, (7, 9)))
        self.assertEqual(channel.outstanding, 1)
        channel.frame_received(AckFrame(50))
        self.assertEqual(channel.outstanding, 0)

    def test_timer_follows_the_earliest_due_line(self):
        channel = self.channel()
        channel.send_line(b"a")
        self.clock.advance(0.1)
        channel.send_line(b"b")
        channel.frame_received(AckFrame(1))
        self.sent()
        self.clock.advance(0.15)  # the timer armed for "a" fires early and re-arms
        self.assertEqual(self.sent(), [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.wire, [(0.35, b"2 b")])

    def test_one_timer_per_channel(self):
        channel = self.channel()
        for n in range(10):
            channel.send_line(b"%d" % n)
            self.clock.advance(0.3)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        channel.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_send_window_is_the_reorder_window(self):
        channel = self.channel(max_reorder=2)
        for line in [b"a", b"b", b"c"]:
            channel.send_line(line)
        self.assertEqual(self.sent(), [b"1 a", b"2 b"])
        self.assertEqual((channel.outstanding, channel.sent), (3, 2))
        self.clock.advance(0.25)
        self.assertEqual(self.sent(), [b"1 a", b"2 b"])  # only sent frames are resent
        channel.frame_received(AckFrame(0, (2,)))
        self.assertEqual(self.sent(), [])  # "1 a" still holds the window
        channel.frame_received(AckFrame(2))
        self.assertEqual(self.wire, [(0.25, b"3 c")])

    def test_waiting_for_window_spends_no_tries(self):
        channel = self.channel(max_reorder=1, max_tries=3)
        channel.send_line(b"a")
        channel.send_line(b"b")
        self.clock.advance(1.5)  # "a" sent at 0, 0.25, 0.75
        channel.frame_received(AckFrame(1))
        self.clock.pump([0.25, 0.25])  # "b" sent at 1.5, 1.75
        self.assertEqual(self.reasons, [])
        self.assertEqual(self.wire[-2:], [(1.5, b"2 b"), (1.75, b"2 b")])

    def test_too_slow_to_read(self):
        channel = self.channel(max_unacked=3)
        for line in [b"a", b"b", b"c", b"d"]:
            channel.send_line(line)
        self.assertEqual(self.sent(), [b"1 a", b"2 b", b"3 c"])
        self.assertEqual(self.reasons, [(0, "too slow to read")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_too_slow_counts_every_piece(self):
        channel = self.channel(max_unacked=2, max_payload=HEADER_ROOM + 4)
        channel.send_line(b"abcdefghijkl")  # three pieces
        self.assertEqual(self.sent(), [])
        self.assertEqual(self.reasons, [(0, "too slow to read")])

    def test_acked_window_makes_room(self):
        channel = self.channel(max_unacked=2)
        channel.send_line(b"a")
        channel.send_line(b"b")
        channel.frame_received(AckFrame(1))
        channel.send_line(b"c")
        self.assertEqual(self.reasons, [])


class FastRetransmitTests(ChannelTestMixin, SynchronousTestCase):
    """A line overtaken by a later acknowledged line is resent at once, not at its timeout."""

    def test_overtaken_line_is_resent_at_once(self):
        channel = self.channel()
        channel.send_line(b"first")
        self.clock.advance(0.01)
        channel.send_line(b"second")
        self.sent()
        channel.frame_received(AckFrame(0, (2,)))
        self.assertEqual(self.sent(), [b"1 first"])
        self.assertEqual(channel.retransmitted, 1)
        channel.frame_received(AckFrame(1))
        self.assertEqual(channel.outstanding, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_line_sent_together_with_the_acked_one_waits(self):
        """Lines sent in the same instant may simply be reordered: no early resend."""
        channel = self.channel()
        channel.send_line(b"first")
        channel.send_line(b"second")
        self.sent()
        channel.frame_received(AckFrame(0, (2,)))
        self.assertEqual(self.sent(), [])
        self.clock.advance(0.25)
        self.assertEqual(self.sent(), [b"1 first"])

    def test_resent_line_is_not_resent_again_by_older_acks(self):
        """After its early resend, only a line sent later than that resend can condemn it."""
        channel = self.channel()
        channel.send_line(b"first")
        self.clock.advance(0.01)
        channel.send_line(b"second")
        self.clock.advance(0.01)
        channel.send_line(b"third")
        self.sent()
        channel.frame_received(AckFrame(0, (2,)))
        self.assertEqual(self.sent(), [b"1 first"])
        channel.frame_received(AckFrame(0, (2, 3)))
        self.assertEqual(self.sent(), [])


class ReceiveTests(ChannelTestMixin, SynchronousTestCase):
    """Incoming data is acked, delivered once, in order, and joined into whole lines."""

    def test_in_order(self):
        channel = self.channel()
        channel.frame_received(DataFrame(1, False, b"a"))
        channel.frame_received(DataFrame(2, False, b"b"))
        self.assertEqual(self.lines, [b"a", b"b"])
        self.assertEqual(self.sent(), [b"ACK 1", b"ACK 2"])
        self.assertEqual((channel.delivered, channel.acks_sent), (2, 2))

    def test_duplicate_reacked_not_delivered(self):
        channel = self.channel()
        channel.frame_received(DataFrame(1, False, b"a"))
        channel.frame_received(DataFrame(1, False, b"a"))
        self.assertEqual(self.lines, [b"a"])
        self.assertEqual(self.sent(), [b"ACK 1", b"ACK 1"])
        self.assertEqual(channel.duplicates, 1)

    def test_reordered(self):
        channel = self.channel()
        for seq in [3, 2, 3, 1]:
            channel.frame_received(DataFrame(seq, False, b"%d" % seq))
        self.assertEqual(self.lines, [b"1", b"2", b"3"])
        self.assertEqual(self.sent(), [b"ACK 0 3", b"ACK 0 2 3", b"ACK 0 2 3", b"ACK 3"])
        self.assertEqual(channel.duplicates, 1)

    def test_reorder_window_bound(self):
        channel = self.channel(max_reorder=4)
        channel.frame_received(DataFrame(5, False, b"too far"))
        self.assertEqual(self.sent(), [])
        channel.frame_received(DataFrame(4, False, b"d"))
        self.assertEqual(self.sent(), [b"ACK 0 4"])

    def test_selective_list_capped(self):
        """At most 32 selective seqs: the lowest 31 buffered, and the frame that just arrived."""
        channel = self.channel()
        for seq in range(2, 50):
            channel.frame_received(DataFrame(seq, False, b"x"))
        last = parse_frame(self.sent()[-1])
        self.assertEqual(last, AckFrame(0, tuple(range(2, 2 + MAX_SELECTIVE - 1)) + (49,)))

    def test_pieces_joined(self):
        channel = self.channel()
        pieces = [DataFrame(2, True, b"cd"), DataFrame(1, True, b"ab"), DataFrame(3, False, b"e")]
        for frame in pieces:
            channel.frame_received(frame)
            self.assertEqual(self.lines, [] if frame.seq != 3 else [b"abcde"])
        self.assertEqual(channel.delivered, 1)

    def test_overlong_line_dropped(self):
        channel = self.channel(max_line=4)
        pieces = [DataFrame(1, True, b"abc"), DataFrame(2, True, b"de"), DataFrame(3, False, b"f")]
        for frame in pieces + [DataFrame(4, False, b"ok")]:
            channel.frame_received(frame)
        self.assertEqual(self.lines, [b"ok"])

    def test_control_frame_refused(self):
        channel = self.channel()
        self.assertRaises(TypeError, channel.frame_received, ControlFrame("PING"))

    def test_delivery_can_close(self):
        channel = self.channel()
        self.lines = []
        channel._deliver = lambda line: (self.lines.append(line), channel.close())
        channel.frame_received(DataFrame(2, False, b"b"))
        channel.frame_received(DataFrame(1, False, b"a"))
        self.assertEqual(self.lines, [b"a"])
        self.assertEqual(self.sent(), [b"ACK 0 2"])

    @given(st.lists(st.integers(1, 40), max_size=120))
    def test_any_order_delivers_each_once_in_order(self, seqs):
        channel = self.channel()
        for seq in seqs + list(range(1, 41)):
            channel.frame_received(DataFrame(seq, False, b"%d" % seq))
        self.assertEqual(self.lines, [b"%d" % n for n in range(1, 41)])


class LongLineTests(ChannelTestMixin, SynchronousTestCase):
    """send_line splits long lines into continued pieces; the receiver joins them."""

    def test_split_on_character_boundaries(self):
        channel = self.channel(max_payload=40)
        line = ("\u20ac" * 30 + "end").encode("utf-8")  # 93 bytes
        channel.send_line(line)
        datagrams = self.sent()
        frames = [parse_frame(datagram) for datagram in datagrams]
        self.assertEqual([frame.more for frame in frames], [True, True, True, False])
        self.assertEqual([frame.seq for frame in frames], [1, 2, 3, 4])
        for datagram, frame in zip(datagrams, frames):
            self.assertLessEqual(len(datagram), 40)
            frame.payload.decode("utf-8")
        receiver = self.channel()
        for frame in reversed(frames):
            receiver.frame_received(frame)
        self.assertEqual(self.lines, [line])

    def test_default_fits_1200_bytes(self):
        channel = self.channel()
        channel.send_line(b"x" * 5000)
        datagrams = self.sent()
        pieces = [parse_frame(datagram).payload for datagram in datagrams]
        self.assertEqual([len(piece) for piece in pieces], [1200 - HEADER_ROOM] * 4 + [248])
        self.assertLessEqual(max(len(datagram) for datagram in datagrams), 1200)

    def test_max_payload_too_small(self):
        self.assertRaises(ValueError, self.channel, max_payload=HEADER_ROOM + 3)


class DrainedTests(ChannelTestMixin, SynchronousTestCase):
    """drained() tells when everything sent is acknowledged, and never fails."""

    def test_immediate_when_idle(self):
        channel = self.channel()
        self.assertIsNone(self.successResultOf(channel.drained()))

    def test_waits_for_ack(self):
        channel = self.channel()
        channel.send_line(b"a")
        channel.send_line(b"b")
        first, second = channel.drained(), channel.drained()
        channel.frame_received(AckFrame(1))
        self.assertNoResult(first)
        channel.frame_received(AckFrame(2))
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))

    def test_fires_on_close(self):
        channel = self.channel()
        channel.send_line(b"a")
        waiting = channel.drained()
        channel.close()
        channel.close()
        self.assertIsNone(self.successResultOf(waiting))
        self.assertIsNone(self.successResultOf(channel.drained()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.reasons, [])

    def test_fires_on_give_up(self):
        channel = self.channel(max_tries=2)
        channel.send_line(b"a")
        waiting = channel.drained()
        self.clock.pump([0.25, 0.5])
        self.assertEqual(self.reasons, [(0.75, "timed out")])
        self.assertIsNone(self.successResultOf(waiting))

    def test_cancelled_waiter_forgotten(self):
        channel = self.channel()
        channel.send_line(b"a")
        cancelled, kept = channel.drained(), channel.drained()
        cancelled.cancel()
        self.failureResultOf(cancelled)
        channel.frame_received(AckFrame(1))
        self.assertIsNone(self.successResultOf(kept))


class RoundTripTimeTests(ChannelTestMixin, SynchronousTestCase):
    """The retransmission timeout follows measured round trips (RFC 6298, Karn's rule)."""

    def test_starts_at_initial(self):
        self.assertEqual(self.channel(initial_rto=0.5).rto, 0.5)

    def test_fast_ack_lowers_rto(self):
        channel = self.channel(min_rto=0.01)
        channel.send_line(b"a")
        self.clock.advance(0.02)
        channel.frame_received(AckFrame(1))
        self.assertAlmostEqual(channel.rto, 0.02 + 4 * 0.01)  # SRTT + 4 * RTTVAR
        channel.send_line(b"b")
        self.sent()
        self.clock.advance(0.06)
        self.assertEqual(self.sent(), [b"2 b"])

    def test_clamped_to_min_rto(self):
        channel = self.channel(min_rto=0.1)
        channel.send_line(b"a")
        self.clock.advance(0.001)
        channel.frame_received(AckFrame(1))
        self.assertEqual(channel.rto, 0.1)

    def test_clamped_to_max_rto(self):
        channel = self.channel(initial_rto=4.0, max_rto=4.0)
        channel.send_line(b"a")
        self.clock.advance(3.0)
        channel.frame_received(AckFrame(1))
        self.assertEqual(channel.rto, 4.0)

    def test_second_sample_smoothed(self):
        channel = self.channel(min_rto=0.01)
        channel.send_line(b"a")
        self.clock.advance(0.1)
        channel.frame_received(AckFrame(1))
        channel.send_line(b"b")
        self.clock.advance(0.2)
        channel.frame_received(AckFrame(2))
        rttvar = 0.75 * 0.05 + 0.25 * 0.1
        srtt = 0.875 * 0.1 + 0.125 * 0.2
        self.assertAlmostEqual(channel.rto, srtt + 4 * rttvar)

    def test_karn_no_sample_from_retransmitted(self):
        channel = self.channel(initial_rto=0.25)
        channel.send_line(b"a")
        self.clock.advance(0.3)  # resent at 0.25
        channel.frame_received(AckFrame(1))
        self.assertEqual(channel.rto, 0.25)

    def test_karn_samples_the_clean_line(self):
        channel = self.channel(initial_rto=0.25, min_rto=0.01)
        channel.send_line(b"a")
        self.clock.advance(0.25)  # "a" resent
        channel.send_line(b"b")
        self.clock.advance(0.02)
        channel.frame_received(AckFrame(2))
        self.assertAlmostEqual(channel.rto, 0.02 + 4 * 0.01)


class EndToEndTests(SynchronousTestCase):
    """Two channels back to back through a lossy, duplicating, reordering link."""

    def test_lossy_link_both_ways(self):
        clock = Clock()
        got = {"a": [], "b": []}
        gave_up = []
        channels = {}

        def make(name, peer, seed):
            def receive(datagram):
                channels[peer].frame_received(parse_frame(datagram))

            link = LossyLink(clock, receive, seed=seed, loss=0.2)
            channels[name] = ReliableChannel(clock, link.send, got[name].append, gave_up.append,
                                             max_payload=200)
            return link

        links = [make("a", "b", seed=1), make("b", "a", seed=2)]

        def line(side, n):  # every 50th line is long enough to need several pieces
            text = "{} line {} ".format(side, n) + ("\u00e9\u20ac" * 100 if n % 50 == 0 else "")
            return text.encode("utf-8")

        for n in range(500):
            channels["a"].send_line(line("a", n))
            channels["b"].send_line(line("b", n))
            clock.advance(0.005)
        drained = [channels["a"].drained(), channels["b"].drained()]
        for _ in range(10000):
            if all(d.called for d in drained):
                break
            clock.advance(0.05)
        clock.advance(1.0)  # let stray duplicates and their ACKs land

        self.assertEqual(gave_up, [])
        self.assertEqual(got["b"], [line("a", n) for n in range(500)])
        self.assertEqual(got["a"], [line("b", n) for n in range(500)])
        self.assertGreater(sum(link.dropped for link in links), 0)
        self.assertGreater(sum(channel.retransmitted for channel in channels.values()), 0)
        self.assertGreater(sum(channel.duplicates for channel in channels.values()), 0)
        for channel in channels.values():
            channel.close()
        self.assertEqual(clock.getDelayedCalls(), [])
