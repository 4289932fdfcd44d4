"""
Tests for L{chatservice.core.ids}: ids are unique and strictly increasing on one node whatever
the clock does, time-ordered, carry their node, and two nodes never issue the same id.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.ids import (
    EPOCH,
    MAX_NODE,
    NODE_BITS,
    SEQUENCE_BITS,
    IdGenerator,
    id_time,
)

#: 2025-06-15T15:06:40Z: a time well after the id epoch.
NOW = 1_750_000_000.0
PER_MS = 1 << SEQUENCE_BITS


def parts(message_id: int) -> tuple[int, int, int]:
    """(milliseconds since the epoch, node, sequence) of an id."""
    return (
        message_id >> (NODE_BITS + SEQUENCE_BITS),
        (message_id >> SEQUENCE_BITS) & MAX_NODE,
        message_id & (PER_MS - 1),
    )


class IdGeneratorTests(SynchronousTestCase):
    """One node's ids."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)

    def test_shape(self):
        """An id is milliseconds since 2020, the node, and a sequence; 63 bits at most."""
        ids = IdGenerator(self.clock, node=37)
        first = ids.next()
        self.assertEqual(parts(first), (int((NOW - EPOCH) * 1000), 37, 0))
        self.assertLess(first, 1 << 63)
        self.assertGreater(first, 0)
        self.assertEqual(EPOCH, 1577836800.0)  # 2020-01-01T00:00:00Z

    def test_time_ordered(self):
        """A later millisecond gives a larger id, starting its sequence again."""
        ids = IdGenerator(self.clock)
        first = ids.next()
        self.clock.advance(0.0015)
        second = ids.next()
        self.clock.advance(3600)
        third = ids.next()
        self.assertLess(first, second)
        self.assertLess(second, third)
        self.assertEqual(parts(second)[0] - parts(first)[0], 1)
        self.assertEqual(parts(second)[2], 0)
        self.assertEqual(parts(third)[0] - parts(first)[0], 3600001)

    def test_id_time(self):
        """id_time gives back the issue time, to the millisecond."""
        ids = IdGenerator(self.clock, node=5)
        self.clock.advance(0.0125)
        self.assertAlmostEqual(id_time(ids.next()), NOW + 0.012, places=6)

    def test_clock_standing_still(self):
        """Ids issued within one millisecond count up the sequence."""
        ids = IdGenerator(self.clock, node=3)
        issued = [ids.next() for _ in range(100)]
        self.assertEqual(issued, sorted(set(issued)))
        self.assertEqual([parts(i)[2] for i in issued], list(range(100)))
        self.assertEqual({parts(i)[1] for i in issued}, {3})

    def test_sequence_overflow(self):
        """The 4097th id of one millisecond borrows the next millisecond, sequence 0."""
        ids = IdGenerator(self.clock)
        issued = [ids.next() for _ in range(PER_MS + 2)]
        self.assertEqual(issued, sorted(set(issued)))
        ms = parts(issued[0])[0]
        self.assertEqual(parts(issued[PER_MS - 1]), (ms, 0, PER_MS - 1))
        self.assertEqual(parts(issued[PER_MS]), (ms + 1, 0, 0))
        self.assertEqual(parts(issued[PER_MS + 1]), (ms + 1, 0, 1))

    def test_borrowed_millisecond_then_clock_catches_up(self):
        """Once the clock passes the borrowed millisecond, ids follow the clock again."""
        ids = IdGenerator(self.clock)
        for _ in range(PER_MS + 1):
            last = ids.next()
        self.clock.advance(0.005)
        after = ids.next()
        self.assertGreater(after, last)
        self.assertEqual(parts(after), (parts(last)[0] + 4, 0, 0))

    def test_clock_going_back(self):
        """A clock stepped back (NTP) does not make ids go back: they keep increasing."""
        ids = IdGenerator(self.clock, node=9)
        before = ids.next()
        self.clock.rightNow -= 30.0
        during = [ids.next() for _ in range(10)]
        self.assertEqual([before] + during, sorted(set([before] + during)))
        self.assertEqual({parts(i)[0] for i in during}, {parts(before)[0]})
        self.assertEqual({parts(i)[1] for i in during}, {9})
        self.clock.rightNow += 31.0
        later = ids.next()
        self.assertGreater(later, during[-1])
        self.assertEqual(parts(later)[2], 0)

    def test_clock_going_back_with_overflow(self):
        """Stepped back and out of sequence numbers: the next millisecond is borrowed."""
        ids = IdGenerator(self.clock)
        issued = [ids.next() for _ in range(PER_MS)]
        self.clock.rightNow -= 1.0
        more = [ids.next() for _ in range(3)]
        everything = issued + more
        self.assertEqual(everything, sorted(set(everything)))
        self.assertEqual(parts(more[0])[0], parts(issued[0])[0] + 1)

    def test_node_range(self):
        """The node is 0 to 1023."""
        IdGenerator(self.clock, node=0)
        IdGenerator(self.clock, node=MAX_NODE)
        self.assertEqual(MAX_NODE, 1023)
        for node in [-1, MAX_NODE + 1]:
            self.assertRaises(ValueError, IdGenerator, self.clock, node=node)


class AdvancePastTests(SynchronousTestCase):
    """advance_past: never issue an id at or below one seen (the history's newest at start)."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)

    def test_own_node_id_from_the_future(self):
        """An id of a later time (a clock that went back across a restart) is passed."""
        ids = IdGenerator(self.clock, node=1)
        later = Clock()
        later.advance(NOW + 60)
        newest = IdGenerator(later, node=1).next()
        ids.advance_past(newest)
        self.assertGreater(ids.next(), newest)

    def test_other_node_same_millisecond(self):
        """Another node's id of this very millisecond, whatever its node or sequence, is passed."""
        for our_node, their_node in [(0, 1023), (1023, 0), (5, 5)]:
            ids = IdGenerator(self.clock, node=our_node)
            theirs = IdGenerator(self.clock, node=their_node)
            for _ in range(17):
                newest = theirs.next()
            ids.advance_past(newest)
            issued = [ids.next() for _ in range(5)]
            self.assertGreater(issued[0], newest)
            self.assertEqual(issued, sorted(set(issued)))
            self.assertEqual({parts(i)[1] for i in issued}, {our_node})

    def test_older_id_changes_nothing(self):
        """An id below what was issued already does not move the generator back or ahead."""
        ids = IdGenerator(self.clock)
        first = ids.next()
        ids.advance_past(first - (10 << (NODE_BITS + SEQUENCE_BITS)))
        second = ids.next()
        self.assertEqual(second, first + 1)

    def test_zero(self):
        """An empty history (newest id 0) changes nothing."""
        ids = IdGenerator(self.clock)
        ids.advance_past(0)
        self.assertEqual(parts(ids.next()), (int((NOW - EPOCH) * 1000), 0, 0))


class NodesTests(SynchronousTestCase):
    """Several nodes issue ids without coordination and never collide."""

    def test_two_nodes_never_collide(self):
        """Two nodes on one clock, past overflow and a step back, issue disjoint ids."""
        clock = Clock()
        clock.advance(NOW)
        one, two = IdGenerator(clock, node=1), IdGenerator(clock, node=2)
        issued_one, issued_two = [], []
        for step in range(3):
            issued_one += [one.next() for _ in range(PER_MS + 10)]
            issued_two += [two.next() for _ in range(50)]
            clock.advance(0.0005)
            if step == 1:
                clock.rightNow -= 0.5
        self.assertEqual(set(issued_one) & set(issued_two), set())
        self.assertEqual(issued_one, sorted(set(issued_one)))
        self.assertEqual(issued_two, sorted(set(issued_two)))

    def test_nodes_interleave_by_time(self):
        """Ids of different nodes sort by time first."""
        clock = Clock()
        clock.advance(NOW)
        one, two = IdGenerator(clock, node=1000), IdGenerator(clock, node=1)
        early = one.next()
        clock.advance(0.002)
        late = two.next()
        self.assertLess(early, late)
