"""
The benchmark's C step (C{bench/stepper.c}) against a relay written here, faithful or faulty:
it counts every receiver exactly and catches a lost line, a duplicated one and one out of
order, so a step it passes is a step every receiver really had.
"""

import selectors
import shutil
import socket
import threading

from twisted.trial.unittest import SynchronousTestCase

from bench import stepper

ROOMS = [0, 0, 0, 1, 1, 1]  # six users, two rooms of three


class User:
    def __init__(self, sock, idx, room, sender, sampled):
        self.sock, self.fd, self.idx, self.room = sock, sock.fileno(), idx, room
        self.seq, self.sender, self.sampled, self.pre, self.post = 0, sender, sampled, b"", b"\n"


class Relay(threading.Thread):
    """Each line from a user goes to the others in its room; C{fault(src, dst, line)} may
    change what one receiver gets (a list of lines to send instead)."""

    def __init__(self, ends, rooms, fault=None):
        super().__init__(daemon=True)
        self.ends, self.rooms, self.fault = ends, rooms, fault
        self.stop = threading.Event()
        self.lines = 0

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
                lines = (partial[src] + data).split(b"\n")
                partial[src] = lines.pop()
                for line in lines:
                    self.lines += 1
                    for dst, end in enumerate(self.ends):
                        if dst == src or self.rooms[dst] != self.rooms[src]:
                            continue
                        out = [line]
                        if self.fault is not None:
                            out = self.fault(src, dst, line, self.lines)
                        for one in out:
                            end.sendall(one + b"\n")


class StepperTests(SynchronousTestCase):
    def setUp(self):
        if shutil.which("gcc") is None:
            self.fail("gcc is needed to build the benchmark's stepper (make test installs it)")
        self.binary = stepper.build()

    def step(self, fault=None, loud=False):
        users, ends = [], []
        for idx, room in enumerate(ROOMS):
            mine, theirs = socket.socketpair()
            mine.setblocking(False)
            users.append(User(mine, idx, room, sender=True, sampled=idx in (0, 4)))
            ends.append(theirs)
        relay = Relay(ends, ROOMS, fault)
        relay.start()
        try:
            result = stepper.run(self.binary, conns=users, rate=600.0, duration=0.5, grace=0.2,
                                 drain=2.0, tick=0.001, loud=loud, probe_every=7, irc=False,
                                 timeout=30)
        finally:
            relay.stop.set()
            relay.join(5)
            for sock in [u.sock for u in users] + ends:
                sock.close()
        sent = {u.idx: result["users"][u.idx]["seq"] for u in users}
        expected = {u.idx: sum(sent[o.idx] for o in users if o.room == u.room and o is not u)
                    for u in users}
        return result, sent, expected

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
