"""
Sequence numbers never break a session: L{chatservice.frontends.reliable} across the 32-bit wrap.

Seqs use RFC 1982 serial-number arithmetic (SERIAL_BITS = 32). Before this, C{encode_data} raised
past 2**31 and the user was dropped with two tracebacks. Every test here runs a channel that starts
near a limit (2**31, the old one, or 2**32, the wrap) and checks sending, cumulative and selective
ACKs, duplicates, the reorder window and long lines across it, then two channels talking across the
wrap through a lossy, duplicating, reordering link on a fake clock.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatservice.frontends.reliable import (
    HEADER_ROOM,
    MAX_SEQ,
    SEQ_MODULUS,
    AckFrame,
    DataFrame,
    MalformedFrame,
    ReliableChannel,
    encode_ack,
    encode_data,
    parse_frame,
    serial_lt,
    unwrap_seq,
)
from tests.lossy import LossyLink
from tests.test_reliable import ChannelTestMixin

OLD_LIMIT = 2**31  # the largest seq before serial arithmetic


class SerialArithmeticTests(SynchronousTestCase):
    """serial_lt and unwrap_seq are RFC 1982's comparison on 32 bits."""

    def test_ordinary_order(self):
        self.assertTrue(serial_lt(1, 2))
        self.assertFalse(serial_lt(2, 1))
        self.assertFalse(serial_lt(7, 7))

    def test_largest_comes_before_zero(self):
        self.assertTrue(serial_lt(MAX_SEQ, 0))
        self.assertFalse(serial_lt(0, MAX_SEQ))
        self.assertTrue(serial_lt(MAX_SEQ - 5, 3))

    def test_half_way_is_undefined(self):
        """Exactly 2**31 apart neither comes first (RFC 1982, 3.2)."""
        self.assertFalse(serial_lt(0, 2**31))
        self.assertFalse(serial_lt(2**31, 0))
        self.assertTrue(serial_lt(0, 2**31 - 1))

    def test_unwrap_reads_the_nearest(self):
        self.assertEqual(unwrap_seq(0, SEQ_MODULUS - 1), SEQ_MODULUS)
        self.assertEqual(unwrap_seq(MAX_SEQ, SEQ_MODULUS + 1), SEQ_MODULUS - 1)
        self.assertEqual(unwrap_seq(5, 3), 5)
        self.assertEqual(unwrap_seq(3, 5 + 7 * SEQ_MODULUS), 3 + 7 * SEQ_MODULUS)

    def test_unwrap_counts_half_way_as_old(self):
        self.assertEqual(unwrap_seq(2**31, 0), -(2**31))

    @given(st.integers(0, 10 * SEQ_MODULUS), st.integers(-(2**31) + 1, 2**31 - 1))
    def test_unwrap_agrees_with_serial_lt(self, near, distance):
        wire = (near + distance) % SEQ_MODULUS
        self.assertEqual(unwrap_seq(wire, near), near + distance)
        self.assertEqual(serial_lt(near % SEQ_MODULUS, wire), distance > 0)


class FramingAcrossTheWrapTests(SynchronousTestCase):
    """Past 2**31 and across 2**32 frames encode and parse."""

    def test_past_the_old_limit(self):
        """encode_data raised here before: the session was dropped with tracebacks."""
        self.assertEqual(encode_data(OLD_LIMIT + 1, b"x"), b"2147483649 x")
        self.assertEqual(parse_frame(b"4294967295 x"), DataFrame(MAX_SEQ, False, b"x"))
        self.assertEqual(parse_frame(b"4294967295+ x"), DataFrame(MAX_SEQ, True, b"x"))

    def test_seqs_beyond_32_bits_are_malformed(self):
        for datagram in [b"4294967296 x", b"ACK 4294967296", b"ACK 0 4294967296"]:
            self.assertRaises(MalformedFrame, parse_frame, datagram)

    def test_selective_seqs_after_the_wrap(self):
        self.assertEqual(parse_frame(b"ACK 4294967295 0 1"), AckFrame(MAX_SEQ, (0, 1)))
        self.assertEqual(
            parse_frame(b"ACK 4294967290 4294967295 3"), AckFrame(MAX_SEQ - 5, (MAX_SEQ, 3))
        )

    def test_selective_seqs_must_come_after(self):
        """Before the cumulative seq, or exactly half the space away, is malformed."""
        for datagram in [b"ACK 10 4294967295", b"ACK 0 2147483648", b"ACK 5 5"]:
            self.assertRaises(MalformedFrame, parse_frame, datagram)
        self.assertEqual(parse_frame(b"ACK 0 2147483647"), AckFrame(0, (2**31 - 1,)))

    def test_encode_ack_orders_after_the_cumulative(self):
        """The selective seqs nearest after the cumulative one are kept, in serial order."""
        self.assertEqual(
            encode_ack(MAX_SEQ - 1, {1, 0, MAX_SEQ}), b"ACK 4294967294 4294967295 0 1"
        )
        self.assertEqual(encode_ack(MAX_SEQ, range(40))[-6:], b" 30 31")


class SendingAcrossTheWrapTests(ChannelTestMixin, SynchronousTestCase):
    """Our numbered lines go from 2**32 - 1 to 0, and ACKs on either side release them."""

    def test_numbers_wrap_to_zero(self):
        channel = self.channel(first_send_seq=MAX_SEQ - 1)
        for line in [b"a", b"b", b"c", b"d"]:
            channel.send_line(line)
        self.assertEqual(
            self.sent(), [b"4294967294 a", b"4294967295 b", b"0 c", b"1 d"]
        )
        self.assertEqual(self.reasons, [])

    def test_past_the_old_limit(self):
        channel = self.channel(first_send_seq=OLD_LIMIT - 1)
        for line in [b"a", b"b", b"c"]:
            channel.send_line(line)
        self.assertEqual(self.sent(), [b"2147483647 a", b"2147483648 b", b"2147483649 c"])
        channel.frame_received(AckFrame(OLD_LIMIT + 1))
        self.assertEqual(channel.outstanding, 0)

    def test_cumulative_ack_after_the_wrap_releases_lines_before_it(self):
        channel = self.channel(first_send_seq=MAX_SEQ - 1)
        for line in [b"a", b"b", b"c", b"d"]:
            channel.send_line(line)
        self.sent()
        channel.frame_received(AckFrame(0))
        self.assertEqual(channel.outstanding, 1)
        self.clock.advance(0.25)
        self.assertEqual(self.sent(), [b"1 d"])
        channel.frame_received(AckFrame(1))
        self.assertEqual(channel.outstanding, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_selective_ack_across_the_wrap(self):
        channel = self.channel(first_send_seq=MAX_SEQ - 1)
        for line in [b"a", b"b", b"c", b"d"]:
            channel.send_line(line)
        self.sent()
        channel.frame_received(parse_frame(b"ACK 4294967294 0"))
        self.assertEqual(channel.outstanding, 2)
        self.clock.advance(0.25)
        self.assertEqual(self.sent(), [b"4294967295 b", b"1 d"])

    def test_old_ack_from_before_the_wrap_is_stale(self):
        """An ACK for seqs before the wrap does not count as one far ahead."""
        channel = self.channel(first_send_seq=MAX_SEQ - 1)
        for line in [b"a", b"b", b"c"]:
            channel.send_line(line)
        channel.frame_received(AckFrame(MAX_SEQ))
        self.assertEqual(channel.outstanding, 1)
        channel.frame_received(AckFrame(MAX_SEQ - 1))  # late, reordered
        channel.frame_received(AckFrame(MAX_SEQ - 10, (MAX_SEQ - 3,)))
        self.assertEqual(channel.outstanding, 1)
        self.sent()
        self.clock.advance(0.25)
        self.assertEqual(self.sent(), [b"0 c"])

    def test_fast_retransmit_across_the_wrap(self):
        """A line before the wrap overtaken by an acknowledged one after it is resent at once."""
        channel = self.channel(first_send_seq=MAX_SEQ)
        channel.send_line(b"first")
        self.clock.advance(0.01)
        channel.send_line(b"second")
        self.sent()
        channel.frame_received(parse_frame(b"ACK 4294967294 0"))
        self.assertEqual(self.sent(), [b"4294967295 first"])

    def test_long_line_pieces_across_the_wrap(self):
        channel = self.channel(max_payload=HEADER_ROOM + 4, first_send_seq=MAX_SEQ)
        channel.send_line(b"abcdefgh")
        self.assertEqual(self.sent(), [b"4294967295+ abcd", b"0 efgh"])

    def test_window_spans_the_wrap(self):
        channel = self.channel(max_reorder=2, first_send_seq=MAX_SEQ)
        for line in [b"a", b"b", b"c"]:
            channel.send_line(line)
        self.assertEqual(self.sent(), [b"4294967295 a", b"0 b"])
        channel.frame_received(AckFrame(MAX_SEQ))
        self.assertEqual(self.sent(), [b"1 c"])

    def test_first_seq_out_of_range(self):
        self.assertRaises(ValueError, self.channel, first_send_seq=SEQ_MODULUS)
        self.assertRaises(ValueError, self.channel, first_receive_seq=-1)


class ReceivingAcrossTheWrapTests(ChannelTestMixin, SynchronousTestCase):
    """The peer's lines across the wrap: in order, once, and acknowledged in serial terms."""

    def test_in_order_across_the_wrap(self):
        channel = self.channel(first_receive_seq=MAX_SEQ - 1)
        for seq in [MAX_SEQ - 1, MAX_SEQ, 0, 1]:
            channel.frame_received(DataFrame(seq, False, b"%d" % seq))
        self.assertEqual(self.lines, [b"4294967294", b"4294967295", b"0", b"1"])
        self.assertEqual(
            self.sent(), [b"ACK 4294967294", b"ACK 4294967295", b"ACK 0", b"ACK 1"]
        )

    def test_reordered_across_the_wrap(self):
        channel = self.channel(first_receive_seq=MAX_SEQ - 1)
        for seq in [0, 1, MAX_SEQ, MAX_SEQ - 1]:
            channel.frame_received(DataFrame(seq, False, b"%d" % seq))
        self.assertEqual(self.lines, [b"4294967294", b"4294967295", b"0", b"1"])
        self.assertEqual(
            self.sent(),
            [
                b"ACK 4294967293 0",
                b"ACK 4294967293 0 1",
                b"ACK 4294967293 4294967295 0 1",
                b"ACK 1",
            ],
        )

    def test_duplicate_from_before_the_wrap_is_not_shown_again(self):
        channel = self.channel(first_receive_seq=MAX_SEQ)
        for seq in [MAX_SEQ, 0, 1, MAX_SEQ, 0]:
            channel.frame_received(DataFrame(seq, False, b"%d" % seq))
        self.assertEqual(self.lines, [b"4294967295", b"0", b"1"])
        self.assertEqual(channel.duplicates, 2)
        self.assertEqual(self.sent()[-2:], [b"ACK 1", b"ACK 1"])

    def test_half_way_around_counts_as_old(self):
        """A seq exactly 2**31 from the expected one is taken as a duplicate, never shown."""
        channel = self.channel(first_receive_seq=5)
        channel.frame_received(DataFrame(5 + 2**31, False, b"far"))
        self.assertEqual((self.lines, channel.duplicates), ([], 1))
        self.assertEqual(self.sent(), [b"ACK 4"])

    def test_reorder_window_across_the_wrap(self):
        channel = self.channel(max_reorder=4, first_receive_seq=MAX_SEQ - 1)
        channel.frame_received(DataFrame(2, False, b"too far"))  # expected + 4
        self.assertEqual(self.sent(), [])
        channel.frame_received(DataFrame(1, False, b"within"))
        self.assertEqual(self.sent(), [b"ACK 4294967293 1"])

    def test_pieces_joined_across_the_wrap(self):
        channel = self.channel(first_receive_seq=MAX_SEQ)
        channel.frame_received(DataFrame(0, False, b"ef"))
        channel.frame_received(DataFrame(MAX_SEQ, True, b"abcd"))
        self.assertEqual(self.lines, [b"abcdef"])

    def test_first_ack_names_the_seq_before_the_first(self):
        """With nothing received yet, the cumulative seq is the one before the first, wrapped."""
        channel = self.channel(first_receive_seq=0)
        channel.frame_received(DataFrame(1, False, b"early"))
        self.assertEqual(self.sent(), [b"ACK 4294967295 1"])

    @given(
        st.sampled_from([1, OLD_LIMIT - 20, MAX_SEQ - 20, MAX_SEQ]),
        st.lists(st.integers(0, 39), max_size=120),
    )
    def test_any_order_delivers_each_once_in_order(self, first, offsets):
        channel = self.channel(first_receive_seq=first)
        for offset in offsets + list(range(40)):
            seq = (first + offset) % SEQ_MODULUS
            channel.frame_received(DataFrame(seq, False, b"%d" % offset))
        self.assertEqual(self.lines, [b"%d" % n for n in range(40)])


class LossyLinkAcrossTheWrapTests(SynchronousTestCase):
    """Two channels talking across the wrap through a lossy, duplicating, reordering link."""

    def talk(self, first_a, first_b, lines=500):
        """a starts numbering at first_a, b at first_b; each sends C{lines} lines."""
        clock = Clock()
        got = {"a": [], "b": []}
        gave_up = []
        wire_seqs = {"a": set(), "b": set()}
        channels = {}

        def make(name, peer, seed, first_send, first_receive):
            def receive(datagram):
                channels[peer].frame_received(parse_frame(datagram))

            link = LossyLink(clock, receive, seed=seed, loss=0.2)

            def send(datagram):
                frame = parse_frame(datagram)
                if isinstance(frame, DataFrame):
                    wire_seqs[name].add(frame.seq)
                link.send(datagram)

            channels[name] = ReliableChannel(
                clock, send, got[name].append, gave_up.append, max_payload=200,
                first_send_seq=first_send, first_receive_seq=first_receive,
            )
            return link

        links = [make("a", "b", 11, first_a, first_b), make("b", "a", 12, first_b, first_a)]

        def line(side, n):  # every 50th line is long enough to need several pieces
            text = "{} line {} ".format(side, n) + ("\u00e9\u20ac" * 100 if n % 50 == 0 else "")
            return text.encode("utf-8")

        for n in range(lines):
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
        self.assertEqual(got["b"], [line("a", n) for n in range(lines)])
        self.assertEqual(got["a"], [line("b", n) for n in range(lines)])
        self.assertGreater(sum(link.dropped for link in links), 0)
        self.assertGreater(sum(link.duplicated for link in links), 0)
        self.assertGreater(sum(link.delayed for link in links), 0)
        self.assertGreater(sum(c.retransmitted for c in channels.values()), 0)
        for channel in channels.values():
            self.assertEqual(channel.outstanding, 0)
            channel.close()
        self.assertEqual(clock.getDelayedCalls(), [])
        return wire_seqs

    def test_both_directions_across_the_wrap(self):
        seqs = self.talk(MAX_SEQ - 200, MAX_SEQ - 300)
        for side in "ab":
            self.assertTrue({MAX_SEQ, 0, 1} <= seqs[side], side)

    def test_both_directions_past_the_old_limit(self):
        seqs = self.talk(OLD_LIMIT - 200, OLD_LIMIT - 10)
        for side in "ab":
            self.assertIn(OLD_LIMIT + 1, seqs[side])
