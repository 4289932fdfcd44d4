"""
The benchmark's C step (C{bench/stepper.c}) against a relay written here, faithful or faulty:
it counts every receiver exactly and catches a lost line, a duplicated one and one out of
order, so a step it passes is a step every receiver really had.
"""

import selectors
import shutil
import socket
import struct
import threading

from twisted.trial.unittest import SynchronousTestCase

from bench import stepper
from bench.tcpgen import ws_frames

ROOMS = [0, 0, 0, 1, 1, 1]  # six users, two rooms of three


class User:
    def __init__(self, sock, idx, room, sender, sampled):
        self.sock, self.fd, self.idx, self.room = sock, sock.fileno(), idx, room
        self.seq, self.sender, self.sampled, self.pre, self.post = 0, sender, sampled, b"", b"\n"
        self.frames = b""


class _Relay(threading.Thread):
    """A room server in miniature: reads every user's socket and hands each read, with what
    was left of that user's last one, to L{received}, which returns what is left now."""

    def __init__(self, ends, rooms, fault=None):
        super().__init__(daemon=True)
        self.ends, self.rooms, self.fault = ends, rooms, fault
        self.stop = threading.Event()

    def run(self):
        sel = selectors.DefaultSelector()
        partial = {}
        for i, end in enumerate(self.ends):
            sel.register(end, selectors.EVENT_READ, i)
            partial[i] = b""
        while not self.stop.is_set():
            for key, _ in sel.select(0.05):
                src = key.data
                data = key.fileobj.recv(65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                partial[src] = self.received(src, partial[src] + data)

    def received(self, src: int, data: bytes) -> bytes:
        raise NotImplementedError


class Relay(_Relay):
    """Each line from a user goes to the others in its room; C{fault(src, dst, line)} may
    change what one receiver gets (a list of lines to send instead)."""

    def __init__(self, ends, rooms, fault=None):
        super().__init__(ends, rooms, fault)
        self.lines = 0

    def received(self, src, data):
        lines = data.split(b"\n")
        for line in lines[:-1]:
            self.lines += 1
            for dst, end in enumerate(self.ends):
                if dst == src or self.rooms[dst] != self.rooms[src]:
                    continue
                out = [line]
                if self.fault is not None:
                    out = self.fault(src, dst, line, self.lines)
                for one in out:
                    end.sendall(one + b"\n")
        return lines[-1]


def server_frame(payload: bytes) -> bytes:
    """An unmasked text frame, as a server sends it."""
    n = len(payload)
    head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + struct.pack(">H", n)
    return head + payload


class WsRelay(_Relay):
    """
    A WebSocket room server in miniature: each masked text frame from a user goes, unmasked,
    to everyone in its room, the sender included (as chatroom's web front-end echoes);
    C{fault(src, dst, n)} may drop (C{0}) or double (C{2}) the n-th frame for one receiver.
    """

    def __init__(self, ends, rooms, fault=None):
        super().__init__(ends, rooms, fault)
        self.count = {}

    def received(self, src, buf):
        while len(buf) >= 6:
            n, head = buf[1] & 0x7F, 2
            if n == 126:
                n, head = struct.unpack(">H", buf[2:4])[0], 4
            if len(buf) < head + 4 + n:
                break
            mask = buf[head:head + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[head + 4:head + 4 + n]))
            buf = buf[head + 4 + n:]
            for dst, end in enumerate(self.ends):
                if self.rooms[dst] != self.rooms[src]:
                    continue
                self.count[(src, dst)] = self.count.get((src, dst), 0) + 1
                times = 1 if self.fault is None else self.fault(src, dst, self.count[(src, dst)])
                end.sendall(server_frame(payload) * times)
        return buf


class _StepperCase(SynchronousTestCase):
    """Runs one step of the built stepper against a relay of the test's own."""

    relay = None  # the relay class
    ws = False

    def setUp(self):
        if shutil.which("gcc") is None:
            self.fail("gcc is needed to build the benchmark's stepper (make test installs it)")
        self.binary = stepper.build()

    def step(self, fault=None, loud=False):
        """Six users, all senders; (result, lines each sent, lines each must receive)."""
        users, ends = [], []
        for idx, room in enumerate(ROOMS):
            mine, theirs = socket.socketpair()
            mine.setblocking(False)
            user = User(mine, idx, room, sender=True, sampled=idx in (0, 4))
            if self.ws:
                user.pre, user.post = b'{"type":"say","text":"', b'"}'
            users.append(user)
            ends.append(theirs)
        relay = self.relay(ends, ROOMS, fault)
        relay.start()
        try:
            result = stepper.run(self.binary, conns=users, rate=600.0, duration=0.5, grace=0.2,
                                 drain=2.0, tick=0.001, loud=loud, probe_every=7, irc=False,
                                 ws=self.ws, timeout=30)
        finally:
            relay.stop.set()
            relay.join(5)
            for sock in [u.sock for u in users] + ends:
                sock.close()
        sent = {u.idx: result["users"][u.idx]["seq"] for u in users}
        # A WebSocket user gets its own lines back; a line user does not.
        expected = {u.idx: sum(sent[o.idx] for o in users
                               if o.room == u.room and (self.ws or o is not u))
                    for u in users}
        return result, sent, expected


class StepperTests(_StepperCase):
    relay = Relay

    def assertExact(self, result, expected):
        for idx, want in expected.items():
            self.assertEqual(result["users"][idx]["rx"], want, "user %d" % idx)

    def test_faithful_relay(self):
        """Every user sends, every receiver counts exactly its room's lines, the sampled ones
        see each sender's lines in order and take probe latencies."""
        for loud in (False, True):
            result, sent, expected = self.step(loud=loud)
            self.assertEqual(sum(sent.values()), 300)
            self.assertExact(result, expected)
            for idx, sampled in result["sampled"].items():
                self.assertEqual(sampled["bad"], 0)
                others = [o for o, room in enumerate(ROOMS) if room == ROOMS[idx] and o != idx]
                self.assertEqual(sampled["next"], {o: sent[o] for o in others})
                self.assertTrue(sampled["lat"])
            self.assertGreater(result["short_in_grace"], -1)
            self.assertEqual(result["short_in_grace"], 0)

    def test_a_lost_line_leaves_one_receiver_short(self):
        seen = []

        def lose(src, dst, line, count):
            if src == 3 and dst == 4:
                seen.append(line)
                if len(seen) == 10:
                    return []
            return [line]

        result, _, expected = self.step(lose)
        short = {idx: expected[idx] - result["users"][idx]["rx"] for idx in expected}
        self.assertEqual(sum(short.values()), 1)
        self.assertEqual(short[4], 1)
        self.assertEqual(result["short_in_grace"], 1)
        self.assertGreater(result["sampled"][4]["bad"] + sum(
            1 for o, q in result["sampled"][4]["next"].items() if q != result["users"][o]["seq"]
        ), 0)

    def test_a_duplicate_is_over_and_out_of_order(self):
        seen = []

        def twice(src, dst, line, count):
            if src == 1 and dst == 0:
                seen.append(line)
                if len(seen) == 10:
                    return [line, line]
            return [line]

        result, _, expected = self.step(twice)
        self.assertEqual(result["users"][0]["rx"], expected[0] + 1)
        self.assertEqual(result["sampled"][0]["bad"], 1)

    def test_a_swap_is_caught(self):
        held = {}

        def swap(src, dst, line, count):
            if dst == 0 and src == 1 and "first" not in held:
                held["first"] = line
                return []
            if dst == 0 and src == 1 and "first" in held and "done" not in held:
                held["done"] = True
                return [line, held["first"]]
            return [line]

        result, _, expected = self.step(swap)
        self.assertEqual(result["users"][0]["rx"], expected[0])
        self.assertGreater(result["sampled"][0]["bad"], 0)


class WebSocketStepperTests(_StepperCase):
    """ws mode: masked frames out, frames counted in, own lines expected back."""

    relay = WsRelay
    ws = True

    def test_faithful_relay_counts_every_frame_own_lines_included(self):
        result, sent, expected = self.step(loud=True)
        self.assertEqual(sum(sent.values()), 300)
        for idx, want in expected.items():
            self.assertEqual(result["users"][idx]["rx"], want, "user %d" % idx)
        for idx, sampled in result["sampled"].items():
            self.assertEqual(sampled["bad"], 0)
            self.assertEqual(set(sampled["next"]), {o for o, r in enumerate(ROOMS)
                                                   if r == ROOMS[idx]})
            self.assertTrue(sampled["lat"])

    def test_a_lost_and_a_doubled_frame_are_caught(self):
        def fault(src, dst, n):
            if (src, dst, n) == (3, 4, 10):
                return 0
            if (src, dst, n) == (1, 0, 10):
                return 2
            return 1

        result, _, expected = self.step(fault, loud=True)
        self.assertEqual(expected[4] - result["users"][4]["rx"], 1)
        self.assertEqual(result["users"][0]["rx"] - expected[0], 1)
        self.assertEqual(result["sampled"][0]["bad"], 1)

    def test_frames_split_across_reads_are_parsed(self):
        frames, rest = ws_frames(server_frame(b"a" * 200) + server_frame(b"bc")[:2])
        self.assertEqual(frames, [(1, b"a" * 200)])
        self.assertEqual(rest, server_frame(b"bc")[:2])
