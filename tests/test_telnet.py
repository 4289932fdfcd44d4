"""
Tests for L{chatservice.frontends.telnet}: the telnet stream decoder and line erasing, alone.

The decoder is pure, so each case feeds bytes (whole, or cut at every
position) and checks the line data, the replies and the flags it returns.
How the line protocol uses it is in C{tests.test_tcp}.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chatservice.frontends.telnet import (
    MAX_SUBNEGOTIATION,
    TIMING_MARK,
    Decoded,
    TelnetDecoder,
    erase,
    option_name,
)

IAC, DONT, DO, WONT, WILL, SB, SE = b"\xff", b"\xfe", b"\xfd", b"\xfc", b"\xfb", b"\xfa", b"\xf0"
IP, AO, AYT, EC, EL, BRK, NOP, DM, GA = (
    b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf8", b"\xf3", b"\xf1", b"\xf2", b"\xf9"
)
TM, ECHO, SGA, TTYPE, NAWS, LINEMODE, BINARY = (
    b"\x06", b"\x01", b"\x03", b"\x18", b"\x1f", b"\x22", b"\x00"
)
#: What Debian's telnet sends when its user presses Ctrl-C (checked with a capture).
CTRL_C = IAC + IP + IAC + DO + TM


def decode_all(*reads):
    """Feed C{reads} to one decoder; return (data, replies, kill flags, decoder)."""
    decoder = TelnetDecoder()
    results = [decoder.decode(read) for read in reads]
    return (
        b"".join(r.data for r in results),
        b"".join(r.replies for r in results),
        [r.kill for r in results],
        decoder,
    )


class NegotiationTests(SynchronousTestCase):
    """RFC 1143 for a side that enables nothing; RFC 860 timing marks always answered."""

    def answer(self, request):
        decoded = TelnetDecoder().decode(request)
        self.assertEqual(decoded.data, b"")
        return decoded.replies

    def test_do_is_refused_with_wont(self):
        for option in (ECHO, SGA, TTYPE, NAWS, LINEMODE, BINARY, b"\xc8"):
            self.assertEqual(self.answer(IAC + DO + option), IAC + WONT + option)

    def test_will_is_refused_with_dont(self):
        for option in (ECHO, SGA, TTYPE, NAWS, LINEMODE, BINARY, TM, b"\xc8"):
            self.assertEqual(self.answer(IAC + WILL + option), IAC + DONT + option)

    def test_wont_and_dont_are_never_answered(self):
        """They confirm the disabled state we are in: answering could start a loop."""
        for option in (ECHO, SGA, TTYPE, TM, b"\xc8"):
            self.assertEqual(self.answer(IAC + WONT + option), b"")
            self.assertEqual(self.answer(IAC + DONT + option), b"")

    def test_do_timing_mark_is_answered_will(self):
        self.assertEqual(self.answer(IAC + DO + TM), IAC + WILL + TM)

    def test_every_timing_mark_is_answered(self):
        """telnet sends DO TIMING-MARK on every Ctrl-C; each needs its answer."""
        decoder = TelnetDecoder()
        for _ in range(3):
            self.assertEqual(decoder.decode(CTRL_C).replies, IAC + WILL + TM)

    def test_repeated_requests_each_answered_state_unchanged(self):
        decoder = TelnetDecoder()
        for _ in range(3):
            self.assertEqual(decoder.decode(IAC + DO + ECHO).replies, IAC + WONT + ECHO)
            self.assertEqual(decoder.decode(IAC + WILL + NAWS).replies, IAC + DONT + NAWS)

    def test_answers_in_order_of_requests(self):
        data, replies, _, _ = decode_all(
            IAC + DO + SGA + IAC + WILL + TTYPE + IAC + DO + TM + IAC + WONT + ECHO
            + IAC + WILL + NAWS
        )
        self.assertEqual(data, b"")
        self.assertEqual(
            replies, IAC + WONT + SGA + IAC + DONT + TTYPE + IAC + WILL + TM + IAC + DONT + NAWS
        )

    def test_request_split_at_every_byte(self):
        data, replies, _, decoder = decode_all(*[bytes([b]) for b in IAC + DO + TM + b"hi\n"])
        self.assertEqual((data, replies), (b"hi\n", IAC + WILL + TM))
        self.assertTrue(decoder.idle)

    def test_names_for_the_log(self):
        decoded = TelnetDecoder().decode(CTRL_C + IAC + WILL + NAWS)
        self.assertEqual(decoded.commands, ("IP", "DO TIMING-MARK", "WILL NAWS"))
        self.assertEqual(decoded.answers, ("WILL TIMING-MARK", "DONT NAWS"))
        self.assertEqual(option_name(TIMING_MARK), "TIMING-MARK")
        self.assertEqual(option_name(200), "200")

    def test_names_are_bounded(self):
        decoded = TelnetDecoder().decode((IAC + DO + ECHO) * 1000)
        self.assertEqual(len(decoded.replies), 3000)
        self.assertEqual(len(decoded.commands), 16)
        self.assertEqual(len(decoded.answers), 16)


class CommandTests(SynchronousTestCase):
    """Commands without options: interrupt and erase are applied, the rest ignored."""

    def test_ctrl_c_as_debian_telnet_sends_it(self):
        decoded = TelnetDecoder().decode(CTRL_C)
        self.assertEqual(decoded, Decoded(
            b"", IAC + WILL + TM, True, ("IP", "DO TIMING-MARK"), ("WILL TIMING-MARK",)
        ))

    def test_interrupt_discards_the_line_being_typed(self):
        data, _, kills, _ = decode_all(b"one\ntyp" + IAC + IP + b"two\n")
        self.assertEqual(data, b"one\ntwo\n")
        self.assertEqual(kills, [False])  # the partial line was in this read

    def test_interrupt_reports_a_line_begun_in_an_earlier_read(self):
        decoder = TelnetDecoder()
        self.assertEqual(decoder.decode(b"half a li"), Decoded(b"half a li"))
        second = decoder.decode(b"ne" + IAC + IP + b"new\n")
        self.assertEqual((second.data, second.kill), (b"new\n", True))

    def test_interrupt_forgets_a_held_cr(self):
        data, _, kills, _ = decode_all(b"abc\r", IAC + IP, b"\nnext\n")
        self.assertEqual(data, b"abc\nnext\n")  # the LF ends an (empty) line, nothing more
        self.assertEqual(kills, [False, True, False])

    def test_erase_line_is_like_interrupt(self):
        data, _, kills, _ = decode_all(b"oops" + IAC + EL + b"fine\n")
        self.assertEqual((data, kills), (b"fine\n", [True]))

    def test_erase_character_is_a_backspace(self):
        data, _, _, _ = decode_all(b"ab" + IAC + EC + b"c\n")
        self.assertEqual(data, b"ab\x08c\n")

    def test_other_commands_ignored(self):
        for command in (AO, AYT, BRK, NOP, DM, GA, b"\xef", SE, b"\x00", b"\x41", b"\xee"):
            data, replies, kills, decoder = decode_all(b"a" + IAC + command + b"b\n")
            self.assertEqual((data, replies, kills), (b"ab\n", b"", [False]), command)
            self.assertTrue(decoder.idle)

    def test_break_and_suspend_then_timing_mark(self):
        """telnet sends IAC BRK IAC DO TIMING-MARK for Ctrl-\\, IAC SUSP ... for Ctrl-Z."""
        for command, name in ((BRK, "BRK"), (b"\xed", "SUSP"), (AO, "AO")):
            decoded = TelnetDecoder().decode(b"half" + IAC + command + IAC + DO + TM)
            self.assertEqual(
                decoded, Decoded(b"half", IAC + WILL + TM, False, (name, "DO TIMING-MARK"),
                                 ("WILL TIMING-MARK",))
            )

    def test_iac_iac_is_a_literal_ff(self):
        data, replies, _, _ = decode_all(b"a" + IAC + IAC + b"b\n")
        self.assertEqual((data, replies), (b"a\xffb\n", b""))

    def test_iac_iac_split_over_reads(self):
        data, _, _, decoder = decode_all(b"a" + IAC, IAC + b"b\n")
        self.assertEqual(data, b"a\xffb\n")
        self.assertTrue(decoder.idle)

    def test_lone_iac_at_end_waits(self):
        decoder = TelnetDecoder()
        self.assertEqual(decoder.decode(b"ab" + IAC).data, b"ab")
        self.assertFalse(decoder.idle)
        self.assertEqual(decoder.decode(NOP + b"c\n").data, b"c\n")
        self.assertTrue(decoder.idle)


class SubnegotiationTests(SynchronousTestCase):
    """IAC SB ... IAC SE is read and thrown away, within a bound."""

    def test_consumed(self):
        data, replies, _, _ = decode_all(
            b"a" + IAC + SB + TTYPE + b"\x00xterm" + IAC + SE + b"b\n"
        )
        self.assertEqual((data, replies), (b"ab\n", b""))

    def test_escaped_iac_inside_does_not_end_it(self):
        data, _, _, _ = decode_all(
            IAC + SB + NAWS + b"\x00" + IAC + IAC + b"\x00\x18" + IAC + SE + b"x\n"
        )
        self.assertEqual(data, b"x\n")

    def test_line_ends_inside_are_not_lines(self):
        data, _, _, _ = decode_all(IAC + SB + b"\x27a\r\nb\n" + IAC + SE + b"x\n")
        self.assertEqual(data, b"x\n")

    def test_split_at_every_byte(self):
        stream = b"a" + IAC + SB + TTYPE + b"\x00vt100" + IAC + IAC + IAC + SE + b"b\r\n"
        data, _, _, decoder = decode_all(*[bytes([b]) for b in stream])
        self.assertEqual(data, b"ab\n")
        self.assertTrue(decoder.idle)

    def test_waiting_for_se_is_not_idle(self):
        decoder = TelnetDecoder()
        decoder.decode(IAC + SB + TTYPE)
        self.assertFalse(decoder.idle)
        self.assertEqual(decoder.decode(b"plain\n").data, b"")
        self.assertEqual(decoder.decode(IAC + SE + b"ok\n").data, b"ok\n")

    def test_abandoned_past_the_bound(self):
        decoder = TelnetDecoder()
        body = b"z" * MAX_SUBNEGOTIATION
        first = decoder.decode(IAC + SB + body)
        self.assertEqual(first.data, b"")
        self.assertFalse(first.abandoned)
        second = decoder.decode(b"over\n")
        self.assertTrue(second.abandoned)
        self.assertEqual(second.data, b"over\n")
        self.assertTrue(decoder.idle)

    def test_bound_in_one_read(self):
        decoded = TelnetDecoder(max_subnegotiation=5).decode(IAC + SB + b"12345" + b"after\n")
        self.assertEqual((decoded.data, decoded.abandoned), (b"after\n", True))

    def test_exactly_at_the_bound_is_fine(self):
        decoded = TelnetDecoder(max_subnegotiation=5).decode(
            IAC + SB + b"12345" + IAC + SE + b"x\n"
        )
        self.assertEqual((decoded.data, decoded.abandoned), (b"x\n", False))

    def test_escaped_iacs_count_toward_the_bound(self):
        decoder = TelnetDecoder(max_subnegotiation=4)
        decoded = decoder.decode(IAC + SB + (IAC + IAC) * 6 + b"data\n")
        self.assertTrue(decoded.abandoned)
        self.assertTrue(decoded.data.endswith(b"data\n"))


class LineEndTests(SynchronousTestCase):
    """CR LF, CR NUL and LF each end exactly one line, wherever the reads are cut."""

    def test_each_line_end(self):
        for end in (b"\r\n", b"\r\x00", b"\n"):
            data, _, _, decoder = decode_all(b"one" + end + b"two" + end)
            self.assertEqual(data, b"one\ntwo\n", end)
            self.assertTrue(decoder.idle)

    def test_mixed(self):
        data, _, _, _ = decode_all(b"a\r\nb\r\x00c\nd\r\n")
        self.assertEqual(data, b"a\nb\nc\nd\n")

    def test_cr_at_end_of_read_waits_for_lf(self):
        decoder = TelnetDecoder()
        self.assertEqual(decoder.decode(b"hello\r").data, b"hello")
        self.assertFalse(decoder.idle)
        self.assertEqual(decoder.decode(b"\n").data, b"\n")
        self.assertTrue(decoder.idle)

    def test_cr_at_end_of_read_waits_for_nul(self):
        data, _, _, _ = decode_all(b"hello\r", b"\x00world\r", b"\x00")
        self.assertEqual(data, b"hello\nworld\n")

    def test_every_cut_of_every_line_end(self):
        stream = b"a\r\nb\r\x00c\nd\r\n\r\x00e\r\n"
        expected = b"a\nb\nc\nd\n\ne\n"
        for cut in range(len(stream) + 1):
            data, _, _, decoder = decode_all(stream[:cut], stream[cut:])
            self.assertEqual(data, expected, cut)
            self.assertTrue(decoder.idle)

    def test_cr_before_something_else_is_data(self):
        data, _, _, _ = decode_all(b"a\rb\n", b"c\r", b"d\n")
        self.assertEqual(data, b"a\rb\nc\rd\n")

    def test_cr_cr_lf_is_one_stray_cr_then_a_line_end(self):
        data, _, _, _ = decode_all(b"one\r\r\ntwo\r\n")
        self.assertEqual(data, b"one\r\ntwo\n")

    def test_commands_between_cr_and_lf_do_not_split(self):
        data, replies, _, _ = decode_all(b"hi\r" + IAC + DO + TM + b"\n")
        self.assertEqual((data, replies), (b"hi\n", IAC + WILL + TM))

    def test_cr_then_iac_iac(self):
        data, _, _, _ = decode_all(b"a\r" + IAC + IAC + b"\n")
        self.assertEqual(data, b"a\r\xff\n")

    def test_nul_alone_is_data(self):
        data, _, _, _ = decode_all(b"a\x00b\n")
        self.assertEqual(data, b"a\x00b\n")

    def test_line_ends_is_decode_without_commands(self):
        """The protocol's cheap path for an idle decoder and a read without IAC."""
        reads = [b"a\r\nb\r\x00c\r", b"\nd\re\r\r\n", b"f\n\r", b"\x00"]
        cheap, full = TelnetDecoder(), TelnetDecoder()
        for read in reads:
            expected = full.decode(read).data
            if cheap.idle:
                self.assertEqual(cheap.line_ends(read), expected, read)
            else:
                self.assertEqual(cheap.decode(read).data, expected, read)
            self.assertEqual(cheap.idle, full.idle, read)
        self.assertTrue(cheap.idle)

    def test_plain_data_unchanged(self):
        text = "héllo wörld \x08\x7f\t 世界\n".encode()
        data, replies, kills, decoder = decode_all(text)
        self.assertEqual((data, replies, kills), (text, b"", [False]))
        self.assertTrue(decoder.idle)


class EraseTests(SynchronousTestCase):
    """Backspace and DEL erase the character before them, whole."""

    def test_backspace_and_delete(self):
        self.assertEqual(erase("helo\x08lo"), "hello")
        self.assertEqual(erase("helo\x7flo"), "hello")
        self.assertEqual(erase("abc\x08\x7fd"), "ad")

    def test_on_an_empty_line_nothing(self):
        self.assertEqual(erase("\x08\x7f\x08"), "")
        self.assertEqual(erase("\x7fhi"), "hi")

    def test_more_erases_than_characters(self):
        self.assertEqual(erase("ab\x08\x08\x08\x08c"), "c")

    def test_a_multibyte_character_is_erased_whole(self):
        for char in ("é", "世", "🎉"):
            self.assertEqual(erase(f"a{char}\x7fb"), "ab")
            self.assertEqual(erase(f"{char}{char}\x08"), char)

    def test_nothing_to_erase(self):
        self.assertEqual(erase("plain"), "plain")


# Bytes that matter to the decoder, mixed with anything at all.
_telnet_pieces = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([
        IAC, IAC + IAC, CTRL_C, IAC + EL, IAC + EC, IAC + AO, IAC + NOP, IAC + SB, IAC + SE,
        IAC + DO, IAC + WILL + TTYPE, IAC + DONT + TM, b"\r", b"\n", b"\r\n", b"\r\x00",
        b"\x00", b"\x08", b"\x7f", "é世".encode(),
    ]),
)


def _model_lines(reads, max_subnegotiation):
    """Decode C{reads} and frame them as the line protocol does: (lines, partial, replies)."""
    decoder = TelnetDecoder(max_subnegotiation)
    lines, partial, replies = [], b"", b""
    for read in reads:
        decoded = decoder.decode(read)
        replies += decoded.replies
        if decoded.kill:
            partial = b""
        *complete, partial = (partial + decoded.data).split(b"\n")
        lines += complete
    return lines, partial, replies


class SplitInvarianceTests(SynchronousTestCase):
    """However TCP cuts the stream into reads, the lines and the answers are the same."""

    @settings(max_examples=300, deadline=None)
    @given(
        pieces=st.lists(_telnet_pieces, max_size=30),
        cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
        bound=st.sampled_from([3, MAX_SUBNEGOTIATION]),
    )
    def test_any_cut_gives_the_same_result(self, pieces, cuts, bound):
        stream = b"".join(pieces)
        points = sorted({min(cut, len(stream)) for cut in cuts})
        reads = [stream[a:b] for a, b in zip([0] + points, points + [len(stream)])]
        self.assertEqual(_model_lines(reads, bound), _model_lines([stream], bound))
        self.assertEqual(
            _model_lines([bytes([b]) for b in stream], bound), _model_lines([stream], bound)
        )
