# -*- test-case-name: tests.test_reliable -*-
"""
Acknowledged, in-order, exactly-once lines over datagrams.

UDP loses, duplicates and reorders datagrams. The UDP transport (C{udp.py}) and the bundled client
(C{client.py}) both need each peer to see every chat line once and in order, so this module numbers
outgoing lines, acknowledges incoming ones and retransmits on a clock until acknowledged.

It is pure protocol machinery and symmetric: no sockets and no global reactor. Time comes in as
an C{IReactorTime}, datagrams go out through a C{send(datagram)} callable, and the transport feeds
parsed frames in with L{ReliableChannel.frame_received}.

Wire format, one frame per datagram (text, seq in decimal, starting at 1 per direction per peer)::

    <seq> <payload>          data: one whole line, e.g. b"12 alice: hi"
    <seq>+ <payload>         data: this payload continues in seq+1 (a long line split in pieces)
    ACK <cum> [<s1> <s2>..]  everything up to cum received, plus these seqs after cum (at most 32)
    VERB [arg ...]           any other frame whose first word is uppercase ASCII (HELLO, JOIN, PING)
    ! <text>                 an error line, passed up whole as ControlFrame("!", (text,))

Only data and ACK frames belong to the channel; control frames are for the transport (which may
also wrap frames, as the UDP server's per-session secret does).

Sequence numbers never run out: they use serial-number arithmetic (RFC 1982) with SERIAL_BITS =
32. A seq on the wire is a decimal in [0, 2**32 - 1]; after 2**32 - 1 comes 0. Seq a comes before
seq b when 0 < (b - a) mod 2**32 < 2**31 (L{serial_lt}); at a distance of exactly 2**31 neither
comes first, and the channel then reads the incoming seq as the older one. Every comparison the
channel makes (cumulative ACK, duplicates, the reorder window, selective ACKs) follows this rule.
The channel's windows (at most C{max_unacked} = 1024 frames unacknowledged, 256 in flight, 256
buffered out of order) are far below 2**31, so every seq the peer can legitimately send is within
2**31 of the one expected, and comparisons are always defined.

Internally the channel counts in unbounded integers and writes each one modulo 2**32; an incoming
seq is read back as the integer nearest to the one it expects (L{unwrap_seq}), which is the same
comparison as RFC 1982's. A channel can start at any seq in either direction (C{first_send_seq},
C{first_receive_seq}), so tests can run one across the wrap.
"""

from __future__ import annotations

import heapq
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple, Union

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

SERIAL_BITS = 32
"""Bits in a sequence number (RFC 1982's SERIAL_BITS)."""

SEQ_MODULUS = 2**SERIAL_BITS
"""Sequence numbers are counted modulo this: after C{SEQ_MODULUS - 1} comes 0."""

MAX_SEQ = SEQ_MODULUS - 1
"""Largest sequence number on the wire; the next one is 0."""

_HALF = 2 ** (SERIAL_BITS - 1)

MAX_TRIES = 16
"""Transmissions of one frame before the peer counts as gone. At 20% loss each way a round trip
fails with p = 0.36, so 16 tries lose a frame with p = 0.36**16 = 8e-8: a lossy but live peer is
kept, while a dead one is given up on after about 50 s (the backoff caps at max_rto)."""

MAX_SELECTIVE = 32
"""Most selectively acknowledged seqs in one ACK, so an ACK datagram stays small."""

HEADER_ROOM = len(b"%d+ " % MAX_SEQ)
"""Bytes a data frame header can take; a piece carries up to C{max_payload - HEADER_ROOM} bytes."""

_VERB = re.compile(rb"[A-Z]+\Z")
_SLACK = 1e-9  # float tolerance when comparing a due time with the clock


class MalformedFrame(ValueError):
    """A datagram that is no frame of ours; the transport logs and ignores it."""


@dataclass(frozen=True)
class DataFrame:
    """One numbered piece of a line; C{more} says the line continues in C{seq + 1}."""

    seq: int
    more: bool
    payload: bytes


@dataclass(frozen=True)
class AckFrame:
    """Receipt of every seq up to C{cumulative} and of the C{selective} seqs above it."""

    cumulative: int
    selective: Tuple[int, ...] = ()


@dataclass(frozen=True)
class ControlFrame:
    """A frame the transport handles itself (HELLO, TOKEN, JOIN, PING, PONG, "!" errors)."""

    verb: str
    args: Tuple[bytes, ...] = ()


Frame = Union[DataFrame, AckFrame, ControlFrame]


def serial_lt(a: int, b: int) -> bool:
    """
    Whether seq C{a} comes before seq C{b} in 32-bit serial-number arithmetic (RFC 1982, 3.2).

    False when they are equal, and when they are exactly 2**31 apart (undefined by the RFC).
    """
    return 0 < (b - a) % SEQ_MODULUS < _HALF


def unwrap_seq(seq: int, near: int) -> int:
    """
    Read a wire seq as the unbounded integer, congruent to it modulo 2**32, nearest to C{near}.

    This is how the channel compares a received seq with what it expects: the result is greater
    than C{near} exactly when C{serial_lt(near % 2**32, seq)}. At a distance of exactly 2**31 it
    picks the lower integer, so an undefined comparison counts the seq as old.

    @param seq: A seq from the wire, 0 to L{MAX_SEQ}.
    @param near: An unbounded integer the channel expects C{seq} to be close to.
    """
    return near + (seq - near + _HALF) % SEQ_MODULUS - _HALF


def _number(word: bytes) -> int:
    """Parse a canonical decimal in [0, MAX_SEQ]; anything else is malformed."""
    if not (0 < len(word) <= 10 and word.isdigit()) or (word[:1] == b"0" and word != b"0"):
        raise MalformedFrame("bad number {!r}".format(word))
    value = int(word)
    if value > MAX_SEQ:
        raise MalformedFrame("number out of range: {}".format(value))
    return value


def parse_frame(datagram: bytes) -> Frame:
    """
    Turn one datagram into a frame value, so transports never parse the wire by hand.

    Data payloads are taken verbatim after the first space; control and ACK frames are split on
    ASCII whitespace, so a trailing newline from C{nc -u} does no harm.

    @param datagram: The bytes of one received datagram.
    @return: A L{DataFrame}, L{AckFrame} or L{ControlFrame}.
    @raise MalformedFrame: For anything else; never any other exception.
    """
    if not datagram:
        raise MalformedFrame("empty datagram")
    head, space, rest = datagram.partition(b" ")
    if head[:1].isdigit():
        more = head.endswith(b"+")
        seq = _number(head[:-1] if more else head)
        if not space:
            raise MalformedFrame("no space after the sequence number")
        return DataFrame(seq, more, rest)
    if head == b"!":
        return ControlFrame("!", (rest,))
    words = datagram.split()
    if not words or _VERB.match(words[0]) is None:
        raise MalformedFrame("not a frame: {!r}".format(datagram[:40]))
    verb = words[0].decode("ascii")
    if verb != "ACK":
        return ControlFrame(verb, tuple(words[1:]))
    if len(words) < 2 or len(words) - 2 > MAX_SELECTIVE:
        raise MalformedFrame("ACK needs a cumulative seq and at most {} more".format(MAX_SELECTIVE))
    cumulative = _number(words[1])
    selective = tuple(_number(word) for word in words[2:])
    for seq in selective:
        if not serial_lt(cumulative, seq):
            raise MalformedFrame("selective seq {} does not come after {}".format(seq, cumulative))
    return AckFrame(cumulative, selective)


def encode_data(seq: int, payload: bytes, more: bool = False) -> bytes:
    """
    Frame one piece of a line for the wire.

    @param seq: Its sequence number, 0 to L{MAX_SEQ} (the seq after L{MAX_SEQ} is 0).
    @param payload: The bytes carried, verbatim.
    @param more: True if the line continues in the next seq.
    @raise ValueError: If C{seq} is out of range.
    """
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError("sequence number out of range: {}".format(seq))
    return b"%d%s %s" % (seq, b"+" if more else b"", payload)


def encode_ack(cumulative: int, selective: Iterable[int] = ()) -> bytes:
    """
    Frame an acknowledgement: all seqs up to C{cumulative}, plus the first L{MAX_SELECTIVE} of
    C{selective} in serial order after C{cumulative} (the oldest gaps matter most to the sender's
    retransmit timer).

    @param cumulative: A wire seq, 0 to L{MAX_SEQ}.
    @param selective: Wire seqs that each come after C{cumulative} (L{serial_lt}).
    @raise ValueError: If a seq is out of range or a selective seq does not follow C{cumulative}.
    """
    if not 0 <= cumulative <= MAX_SEQ:
        raise ValueError("sequence number out of range: {}".format(cumulative))
    extra = sorted(selective, key=lambda seq: (seq - cumulative) % SEQ_MODULUS)[:MAX_SELECTIVE]
    for seq in extra:
        if not (0 <= seq <= MAX_SEQ and serial_lt(cumulative, seq)):
            raise ValueError("selective seq {} does not come after {}".format(seq, cumulative))
    return b" ".join([b"ACK", b"%d" % cumulative] + [b"%d" % seq for seq in extra])


def split_utf8(payload: bytes, limit: int) -> List[bytes]:
    """
    Split C{payload} into pieces of at most C{limit} bytes, never inside a UTF-8 character, so each
    piece of a long line is readable on its own.

    Bytes that are not UTF-8 are cut at the limit. An empty payload is one empty piece.

    @param limit: At least 4, the longest UTF-8 character.
    """
    pieces = []
    start = 0
    while len(payload) - start > limit:
        cut = start + limit
        back = cut
        while back > cut - 3 and payload[back] & 0xC0 == 0x80:  # a continuation byte
            back -= 1
        if payload[back] & 0xC0 == 0x80:
            back = cut  # four continuation bytes in a row: not UTF-8, cut anywhere
        pieces.append(payload[start:back])
        start = back
    pieces.append(payload[start:])
    return pieces


@dataclass(slots=True)
class _Outgoing:
    """A numbered data frame not yet acknowledged; C{tries} is 0 until it is first sent."""

    datagram: bytes
    first_sent: float = 0.0
    last_sent: float = 0.0
    due: float = 0.0
    tries: int = 0


class ReliableChannel:
    """
    One peer's two reliable streams: our numbered lines out, their numbered lines in.

    Outgoing frames are kept until acknowledged and retransmitted with per-frame exponential
    backoff, from one timer armed no later than the earliest due frame. Incoming frames are
    acknowledged, de-duplicated, reordered within C{max_reorder} and handed up as whole lines.

    C{max_reorder} is also the send window: a frame is first sent only once it is less than
    C{max_reorder} past the oldest unacknowledged one, so the peer (configured alike) can buffer
    it. Frames the peer would drop for being too far ahead of a gap would otherwise spend their
    tries while the gap is being resent, and we would give up on a peer that is only lossy.

    Bounds: C{max_unacked} frames numbered but not acknowledged, sent or waiting for the window
    (beyond it the peer is "too slow to read"); C{max_reorder} seqs buffered ahead of a gap;
    C{max_line} bytes of one line being joined.

    Seqs are counted internally as unbounded integers and written modulo 2**32; every seq read
    from the peer is placed with L{unwrap_seq} next to the one the channel expects (serial-number
    arithmetic, see the module docstring), so a channel runs across the wrap unchanged.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        send: Callable[[bytes], object],
        deliver: Callable[[bytes], object],
        give_up: Callable[[str], object],
        *,
        initial_rto: float = 0.25,
        min_rto: float = 0.1,
        max_rto: float = 4.0,
        max_tries: int = MAX_TRIES,
        max_unacked: int = 1024,
        max_reorder: int = 256,
        max_payload: int = 1200,
        max_line: int = 65536,
        first_send_seq: int = 1,
        first_receive_seq: int = 1,
        peer: object = None,
        on_retransmit=None,
    ) -> None:
        """
        @param clock: Time and timers for retransmission.
        @param send: Puts one datagram on the wire to this peer.
        @param deliver: Called once per whole incoming line, in order.
        @param give_up: Called at most once with "timed out" or "too slow to read"; the channel is
            closed by then.
        @param max_payload: Largest datagram built by L{send_line}, header included.
        @param max_line: Longest incoming line joined from pieces; longer ones are dropped.
        @param first_send_seq: The seq of our first line (1 on the wire protocol; another value
            in [0, L{MAX_SEQ}] lets a test start near the wrap).
        @param on_retransmit: called with no argument each time a frame is sent again (metrics).
        @param first_receive_seq: The seq we expect the peer's first line to have (likewise).
        @param peer: Names the peer in this channel's log events (the UDP server passes the
            address), so a log line about a peer says which one.
        @raise ValueError: For an option out of range.
        """
        if not 0 < min_rto <= max_rto:
            raise ValueError("need 0 < min_rto <= max_rto")
        if max_tries < 1 or max_unacked < 1 or max_reorder < 1:
            raise ValueError("max_tries, max_unacked and max_reorder must be positive")
        if max_payload < HEADER_ROOM + 4:
            raise ValueError("max_payload must leave room for a header and one character")
        for first in (first_send_seq, first_receive_seq):
            if not 0 <= first <= MAX_SEQ:
                raise ValueError("a first seq must be in [0, MAX_SEQ]: {}".format(first))
        self._clock = clock
        self._send = send
        self._deliver = deliver
        self._on_give_up = give_up
        self._min_rto = min_rto
        self._max_rto = max_rto
        self._max_tries = max_tries
        self._max_unacked = max_unacked
        self._max_reorder = max_reorder
        self._piece_limit = max_payload - HEADER_ROOM
        self._max_line = max_line
        self._peer = peer

        self._rto = min(max(initial_rto, min_rto), max_rto)
        self._srtt: Optional[float] = None
        self._rttvar = 0.0
        # Unbounded integers; the wire carries them modulo 2**32.
        self._next_seq = first_send_seq  # seq of the next line piece we number
        self._next_unsent = first_send_seq  # first numbered piece not sent yet (window full)
        self._unacked: OrderedDict[int, _Outgoing] = OrderedDict()
        self._timer: Optional[IDelayedCall] = None
        self._waiters: List[Deferred[None]] = []

        self._next_expected = first_receive_seq
        self._reorder: dict[int, DataFrame] = {}
        self._partial: List[bytes] = []
        self._partial_size = 0
        self._discarding = False
        self._closed = False

        self.sent = 0
        self.retransmitted = 0
        self._on_retransmit = on_retransmit
        self.delivered = 0
        self.duplicates = 0
        self.acks_sent = 0

    @property
    def rto(self) -> float:
        """The current retransmission timeout in seconds, before per-frame backoff."""
        return self._rto

    @property
    def outstanding(self) -> int:
        """How many numbered data frames wait for an ACK, including those not sent yet."""
        return len(self._unacked)

    @property
    def closed(self) -> bool:
        """True once L{close} was called or the peer was given up on."""
        return self._closed

    # Sending

    def send_line(self, payload: bytes) -> None:
        """
        Send one line reliably: split it into pieces if long, number them, send them at once
        (or as soon as the send window allows) and keep them for retransmission until
        acknowledged. Ignored once closed.

        Gives up with "too slow to read" instead if the line would take the unacknowledged count
        past C{max_unacked}.
        """
        if self._closed:
            self.log.debug("Dropped a line sent on a closed channel")
            return
        pieces = split_utf8(payload, self._piece_limit)
        if len(self._unacked) + len(pieces) > self._max_unacked:
            self._give_up("too slow to read")
            return
        last = len(pieces) - 1
        for index, piece in enumerate(pieces):
            datagram = encode_data(self._next_seq % SEQ_MODULUS, piece, more=index < last)
            self._unacked[self._next_seq] = _Outgoing(datagram)
            self._next_seq += 1
        self._send_window()

    def _send_window(self) -> None:
        """First transmission of every numbered frame that now fits in the send window."""
        if not self._unacked:
            return
        limit = min(next(iter(self._unacked)) + self._max_reorder, self._next_seq)
        now = self._clock.seconds()
        due = now + self._backoff(1)
        while self._next_unsent < limit and not self._closed:  # send() may close us
            entry = self._unacked.get(self._next_unsent)
            self._next_unsent += 1
            if entry is None:  # acknowledged before we sent it: a confused peer
                continue
            entry.first_sent = entry.last_sent = now
            entry.due, entry.tries = due, 1
            self.sent += 1
            self._arm(due)
            self._send(entry.datagram)

    def _backoff(self, tries: int) -> float:
        """Timeout after the C{tries}-th transmission: rto * 2**(tries-1), at most max_rto."""
        return min(self._rto * 2 ** min(tries - 1, 32), self._max_rto)

    def _arm(self, due: float) -> None:
        """Make sure the one timer fires no later than C{due}."""
        now = self._clock.seconds()
        if self._timer is None:
            self._timer = self._clock.callLater(max(0.0, due - now), self._expire)
        elif due < self._timer.getTime():
            self._timer.reset(max(0.0, due - now))

    def _expire(self) -> None:
        """Retransmit every due frame, give up on one tried too often, re-arm for the next."""
        self._timer = None
        now = self._clock.seconds()
        next_due = None
        for seq, entry in list(self._unacked.items()):
            if seq >= self._next_unsent:  # the rest wait for the window, not for a timer
                break
            if entry.due <= now + _SLACK:
                if entry.tries >= self._max_tries:
                    self._give_up("timed out")
                    return
                self._retransmit(seq, entry, now)
                if self._closed:
                    return
            if next_due is None or entry.due < next_due:
                next_due = entry.due
        if next_due is not None:
            self._arm(next_due)

    def _retransmit(self, seq: int, entry: _Outgoing, now: float) -> None:
        entry.tries += 1
        entry.due = now + self._backoff(entry.tries)
        entry.last_sent = now
        self.retransmitted += 1
        if self._on_retransmit is not None:
            self._on_retransmit()
        self.log.debug(
            "Retransmitting {seq} to {peer} (try {tries})",
            seq=seq % SEQ_MODULUS, peer=self._peer, tries=entry.tries,
        )
        self._send(entry.datagram)

    def _ack_received(self, frame: AckFrame) -> None:
        """
        Forget acknowledged frames; measure RTT from the newest never-retransmitted one; resend
        at once what the ACK shows as lost. The ACK's seqs are read next to our next seq, so an
        ACK from before the wrap is old, not far ahead.
        """
        unacked = self._unacked
        sample: Optional[Tuple[int, _Outgoing]] = None
        newest_acked = 0.0  # when the most recently sent of the frames acked here went out
        cumulative = unwrap_seq(frame.cumulative, self._next_seq)
        while unacked and next(iter(unacked)) <= cumulative:
            seq, entry = unacked.popitem(last=False)
            newest_acked = max(newest_acked, entry.last_sent)
            if entry.tries == 1:
                sample = (seq, entry)
        highest = cumulative
        for wire_seq in frame.selective:
            seq = unwrap_seq(wire_seq, self._next_seq)
            entry = unacked.pop(seq, None)
            if entry is None:
                continue
            newest_acked = max(newest_acked, entry.last_sent)
            highest = max(highest, seq)
            if entry.tries == 1 and (sample is None or seq > sample[0]):
                sample = (seq, entry)
        if sample is not None:  # Karn's rule: retransmitted frames give no sample
            self._measure(self._clock.seconds() - sample[1].first_sent)
        if not unacked:
            self._cancel_timer()
            self._fire_waiters()
            return
        self._resend_overtaken(highest, newest_acked)
        if not self._closed:
            self._send_window()

    def _resend_overtaken(self, highest: int, newest_acked: float) -> None:
        """
        Fast retransmit (time-based, as RACK, RFC 8985): a frame still unacknowledged though a
        frame sent after it was acknowledged is lost, so it is sent again now rather than at its
        timeout. A frame sent no longer ago than the reordering allowance is left alone, and so
        is one on its last try (the timer decides that one).
        """
        if not newest_acked:
            return
        now = self._clock.seconds()
        allowance = (self._srtt or 0.0) / 4
        for seq, entry in list(self._unacked.items()):
            if seq >= highest or seq >= self._next_unsent:
                break
            if entry.last_sent < newest_acked - allowance and entry.tries < self._max_tries:
                self._retransmit(seq, entry, now)
                self._arm(entry.due)
                if self._closed:
                    return

    def _measure(self, rtt: float) -> None:
        """Update SRTT, RTTVAR and RTO from one round-trip sample (RFC 6298 section 2)."""
        if self._srtt is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._rto = min(max(self._srtt + 4 * self._rttvar, self._min_rto), self._max_rto)

    # Receiving

    def frame_received(self, frame: Union[DataFrame, AckFrame]) -> None:
        """
        Take one parsed frame from this peer: data is acknowledged and delivered in order once,
        an ACK releases the frames it covers. Ignored once closed.

        @raise TypeError: For a L{ControlFrame}; those belong to the transport.
        """
        if self._closed:
            return
        if isinstance(frame, AckFrame):
            self._ack_received(frame)
        elif isinstance(frame, DataFrame):
            self._data_received(frame)
        else:
            raise TypeError("not a channel frame: {!r}".format(frame))

    def _data_received(self, frame: DataFrame) -> None:
        """Buffer within the reorder window, deliver what is now in order, then ACK."""
        seq = unwrap_seq(frame.seq, self._next_expected)
        if seq < self._next_expected or seq in self._reorder:
            self.duplicates += 1
        elif seq >= self._next_expected + self._max_reorder:
            self.log.debug(
                "Dropped {seq} from {peer}, beyond the reorder window of {max_reorder} from"
                " {expected}",
                seq=frame.seq, peer=self._peer, max_reorder=self._max_reorder,
                expected=self._next_expected % SEQ_MODULUS,
            )
            return
        else:
            self._reorder[seq] = frame
        while not self._closed:
            ready = self._reorder.pop(self._next_expected, None)
            if ready is None:
                break
            self._next_expected += 1
            self._assemble(ready)
        if not self._closed:
            self._send_ack(seq)

    def _assemble(self, frame: DataFrame) -> None:
        """Join continued pieces and deliver each whole line, dropping lines over max_line."""
        if self._discarding:
            self._discarding = frame.more
            return
        if not frame.more and not self._partial:
            self.delivered += 1
            self._deliver(frame.payload)
            return
        self._partial.append(frame.payload)
        self._partial_size += len(frame.payload)
        if self._partial_size > self._max_line:
            self.log.warn(
                "Dropped a line from {peer} longer than {max_line} bytes",
                peer=self._peer, max_line=self._max_line,
            )
            self._partial, self._partial_size = [], 0
            self._discarding = frame.more
        elif not frame.more:
            line = b"".join(self._partial)
            self._partial, self._partial_size = [], 0
            self.delivered += 1
            self._deliver(line)

    def _send_ack(self, latest: int) -> None:
        """
        Acknowledge everything in order so far, the lowest buffered seqs beyond it, and always
        the frame that just arrived: with many frames buffered behind a gap, naming only the
        lowest would leave the rest unacknowledged and sent again for nothing.
        """
        self.acks_sent += 1
        cumulative = self._next_expected - 1
        selective = heapq.nsmallest(MAX_SELECTIVE - 1, self._reorder)
        if latest > cumulative and latest in self._reorder and latest not in selective:
            selective.append(latest)
        self._send(
            encode_ack(cumulative % SEQ_MODULUS, [seq % SEQ_MODULUS for seq in selective])
        )

    # Waiting and closing

    def drained(self) -> Deferred[None]:
        """
        Wait until every line sent has been acknowledged, e.g. to flush before hanging up.

        @return: A Deferred firing with None once nothing is unacknowledged or the channel is
            closed; at once if that is already so. It never fails.
        """
        if self._closed or not self._unacked:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._forget_waiter)
        self._waiters.append(waiter)
        return waiter

    def _forget_waiter(self, waiter: Deferred[None]) -> None:
        """A caller cancelled its drained() Deferred: stop tracking it."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _fire_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    def close(self) -> None:
        """Stop for good: cancel the timer, forget all state, fire drained() waiters. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        self._unacked.clear()
        self._reorder.clear()
        self._partial, self._partial_size = [], 0
        self._fire_waiters()

    def _give_up(self, reason: str) -> None:
        """Declare the peer gone: close, then tell the owner why (once)."""
        if self._closed:
            return
        self.log.warn(
            "Giving up on peer {peer}: {reason} ({unacked} unacknowledged)",
            peer=self._peer, reason=reason, unacked=len(self._unacked),
        )
        self.close()
        self._on_give_up(reason)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
