"""
Tests for L{chatservice.core.flood}: the token bucket that delays lines, and the kick rule, on explicit
times.
"""

from twisted.trial.unittest import SynchronousTestCase

from chatservice.core.flood import ABUSE_FACTOR, ABUSE_SECONDS, FloodGuard, FloodPolicy


def arrive(guard, start, seconds, per_second):
    """
    C{per_second} lines (at most 8) arrive in each of C{seconds} seconds from C{start}, spaced by
    1/8 s so every time is exact in binary; return [(time, abusive)].
    """
    assert per_second <= 8
    return [
        (start + second + index / 8, guard.abusive(start + second + index / 8))
        for second in range(seconds)
        for index in range(per_second)
    ]


class FloodPolicyTests(SynchronousTestCase):
    """A rate of 0 turns flood control off."""

    def test_rate_zero_is_off(self):
        self.assertFalse(FloodPolicy(rate=0).enabled)

    def test_positive_rate_is_on(self):
        self.assertTrue(FloodPolicy(rate=0.5).enabled)

    def test_queue_has_a_bound(self):
        """Lines held for a sender that cannot be paused are bounded by default."""
        self.assertEqual(FloodPolicy().queue, 100)


class TokenBucketTests(SynchronousTestCase):
    """take() spends a token, or says how long until one is there; it never drops a line."""

    def test_burst_passes_at_once(self):
        """A full bucket lets C{burst} lines go at once; the next must wait 1/rate."""
        guard = FloodGuard(FloodPolicy(rate=2, burst=3), now=0.0)
        self.assertEqual([guard.take(0.0) for _ in range(4)], [0.0, 0.0, 0.0, 0.5])

    def test_waiting_spends_nothing(self):
        """Asking again before the wait is over gives the rest of the wait, not a longer one."""
        guard = FloodGuard(FloodPolicy(rate=2, burst=1), now=0.0)
        self.assertEqual(guard.take(0.0), 0.0)
        self.assertEqual(guard.take(0.0), 0.5)
        self.assertEqual(guard.take(0.25), 0.25)
        self.assertEqual(guard.take(0.5), 0.0)
        self.assertEqual(guard.take(0.5), 0.5)

    def test_sustained_rate_passes(self):
        """Lines at exactly the rate never wait."""
        guard = FloodGuard(FloodPolicy(rate=4, burst=1), now=0.0)
        self.assertEqual({guard.take(step / 4) for step in range(400)}, {0.0})

    def test_tokens_capped_at_burst(self):
        """A long silence refills to C{burst}, no more."""
        guard = FloodGuard(FloodPolicy(rate=1, burst=2), now=0.0)
        self.assertEqual([guard.take(100.0) for _ in range(3)], [0.0, 0.0, 1.0])

    def test_paced_by_the_waits_goes_at_the_rate(self):
        """A sender that waits as told sends exactly C{rate} lines a second after the burst."""
        guard = FloodGuard(FloodPolicy(rate=8, burst=4), now=0.0)
        now, sent = 0.0, []
        while now <= 2.0:
            wait = guard.take(now)
            if wait:
                now += wait
            else:
                sent.append(now)
        self.assertEqual(len(sent), 4 + 16)
        self.assertEqual(sent[4:8], [0.125, 0.25, 0.375, 0.5])

    def test_rate_zero_never_waits(self):
        guard = FloodGuard(FloodPolicy(rate=0, burst=1), now=0.0)
        self.assertEqual({guard.take(0.0) for _ in range(1000)}, {0.0})

    def test_rate_zero_never_kicks(self):
        guard = FloodGuard(FloodPolicy(rate=0, burst=1), now=0.0)
        self.assertFalse(any(abusive for _, abusive in arrive(guard, 0, 30, 8)))


class KickTests(SynchronousTestCase):
    """Lines arriving at more than 5x the rate for 10 consecutive seconds kick, and nothing less."""

    def setUp(self):
        self.assertEqual((ABUSE_FACTOR, ABUSE_SECONDS), (5, 10))
        # Rate 1: more than 5 lines in a second is abuse.
        self.guard = FloodGuard(FloodPolicy(rate=1, burst=1), now=0.0)

    def first_kick(self, arrivals):
        return next((t for t, abusive in arrivals if abusive), None)

    def test_kick_after_ten_seconds(self):
        """Six lines a second from t=0: the first line after ten full seconds is a kick."""
        self.assertIsNone(self.first_kick(arrive(self.guard, 0, 10, 6)))
        self.assertTrue(self.guard.abusive(10.0))

    def test_no_kick_at_exactly_five_times_rate(self):
        """Five lines a second is not more than 5x the rate: never a kick."""
        self.assertIsNone(self.first_kick(arrive(self.guard, 0, 30, 5)))

    def test_quiet_second_resets(self):
        """Nine flooding seconds, one calm second, nine more: no kick; a tenth one kicks."""
        arrivals = arrive(self.guard, 0, 9, 6)
        arrivals += arrive(self.guard, 9, 1, 1)
        arrivals += arrive(self.guard, 10, 9, 6)
        self.assertIsNone(self.first_kick(arrivals))
        self.assertIsNone(self.first_kick(arrive(self.guard, 19, 1, 6)))
        self.assertTrue(self.guard.abusive(20.0))

    def test_silent_gap_resets(self):
        """A flooding second, two silent seconds, then nine flooding seconds: no kick yet."""
        arrivals = arrive(self.guard, 0, 1, 6)
        arrivals += arrive(self.guard, 3, 9, 6)
        arrivals += arrive(self.guard, 12, 1, 1)
        self.assertIsNone(self.first_kick(arrivals))

    def test_kicks_keep_coming(self):
        """Once kicked, every further line is a kick too."""
        arrive(self.guard, 0, 10, 6)
        self.assertEqual([self.guard.abusive(10.0), self.guard.abusive(10.125)], [True, True])


class RoundingTests(SynchronousTestCase):
    """A bucket a rounding error short of a token still has one, so waits never shrink to nothing."""

    def test_refill_short_by_rounding_passes(self):
        guard = FloodGuard(FloodPolicy(rate=10, burst=20), now=0.0)
        for _ in range(20):
            guard.take(60.0)
        now = 60.0
        for _ in range(1000):
            wait = guard.take(now)
            if wait:
                self.assertGreater(now + wait, now)  # the clock must move
                now += wait
        self.assertAlmostEqual(now, 60.0 + 500 * 0.1, places=6)
