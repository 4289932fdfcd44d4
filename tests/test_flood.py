"""
Tests for L{chatservice.flood}: the token bucket, warnings and the kick rule, on explicit times.
"""

from twisted.trial.unittest import SynchronousTestCase

from chatservice.flood import ABUSE_FACTOR, ABUSE_SECONDS, FloodGuard, FloodPolicy, Verdict

PASS, DROP, WARN, KICK = Verdict.PASS, Verdict.DROP, Verdict.WARN, Verdict.KICK


def send(guard, start, seconds, per_second):
    """
    Send C{per_second} lines (at most 8) in each of C{seconds} seconds from C{start}, spaced by
    1/8 s so every time is exact in binary; return [(time, verdict)].
    """
    assert per_second <= 8
    return [
        (start + second + index / 8, guard.check(start + second + index / 8))
        for second in range(seconds)
        for index in range(per_second)
    ]


class FloodPolicyTests(SynchronousTestCase):
    """FloodPolicy says whether flood control is on."""

    def test_rate_zero_is_off(self):
        """A rate of 0 turns flood control off."""
        self.assertFalse(FloodPolicy(rate=0, burst=5).enabled)

    def test_positive_rate_is_on(self):
        """Any positive rate turns it on."""
        self.assertTrue(FloodPolicy(rate=0.5, burst=1).enabled)


class TokenBucketTests(SynchronousTestCase):
    """Lines pass while tokens last; tokens come back at the rate, up to the burst."""

    def test_burst_passes_at_once(self):
        """A fresh guard passes a whole burst at one instant, then refuses."""
        guard = FloodGuard(FloodPolicy(rate=1, burst=3), now=0.0)
        self.assertEqual([guard.check(0.0) for _ in range(4)], [PASS, PASS, PASS, WARN])

    def test_refills_at_rate(self):
        """After 1/rate seconds one more line passes."""
        guard = FloodGuard(FloodPolicy(rate=2, burst=1), now=0.0)
        self.assertEqual([guard.check(0.0), guard.check(0.0)], [PASS, WARN])
        self.assertEqual(guard.check(0.25), DROP)
        self.assertEqual(guard.check(0.5), PASS)

    def test_sustained_rate_passes(self):
        """Lines at exactly the rate always pass."""
        guard = FloodGuard(FloodPolicy(rate=4, burst=1), now=0.0)
        verdicts = {guard.check(step / 4) for step in range(400)}
        self.assertEqual(verdicts, {PASS})

    def test_tokens_capped_at_burst(self):
        """A long silence saves up at most a burst."""
        guard = FloodGuard(FloodPolicy(rate=10, burst=2), now=0.0)
        self.assertEqual([guard.check(100.0) for _ in range(3)], [PASS, PASS, WARN])

    def test_warns_at_most_once_per_second(self):
        """Over the limit, the first line warns and the rest of that second are dropped."""
        guard = FloodGuard(FloodPolicy(rate=0.25, burst=1), now=0.0)
        verdicts = [(t, guard.check(t)) for t in [0.0, 0.0, 0.0, 0.5, 0.875, 1.0, 1.5, 2.0]]
        self.assertEqual(
            verdicts,
            [
                (0.0, PASS),
                (0.0, WARN),
                (0.0, DROP),
                (0.5, DROP),
                (0.875, DROP),
                (1.0, WARN),
                (1.5, DROP),
                (2.0, WARN),
            ],
        )

    def test_rate_zero_passes_everything(self):
        """With flood control off every line passes, however many."""
        guard = FloodGuard(FloodPolicy(rate=0, burst=0), now=0.0)
        self.assertEqual({guard.check(0.0) for _ in range(1000)}, {PASS})

    def test_rate_zero_never_kicks(self):
        """With flood control off nobody is kicked, however long they flood."""
        guard = FloodGuard(FloodPolicy(rate=0, burst=0), now=0.0)
        self.assertEqual({verdict for _, verdict in send(guard, 0, 30, 8)}, {PASS})


class KickTests(SynchronousTestCase):
    """Flooding at more than 5x the rate for 10 consecutive seconds kicks, and nothing less."""

    def setUp(self):
        self.assertEqual((ABUSE_FACTOR, ABUSE_SECONDS), (5, 10))
        # Rate 1: more than 5 lines in a second is abuse.
        self.guard = FloodGuard(FloodPolicy(rate=1, burst=1), now=0.0)

    def first_kick(self, verdicts):
        return next((t for t, verdict in verdicts if verdict is KICK), None)

    def test_kick_after_ten_seconds(self):
        """Six lines a second from t=0: the first line after ten full seconds is a kick."""
        verdicts = send(self.guard, 0, 10, 6)
        self.assertNotIn(KICK, [verdict for _, verdict in verdicts])
        self.assertEqual(self.guard.check(10.0), KICK)

    def test_no_kick_at_exactly_five_times_rate(self):
        """Five lines a second is not more than 5x the rate: never a kick."""
        verdicts = send(self.guard, 0, 30, 5)
        self.assertIsNone(self.first_kick(verdicts))

    def test_quiet_second_resets(self):
        """Nine flooding seconds, one calm second, nine more: no kick; a tenth one kicks."""
        verdicts = send(self.guard, 0, 9, 6)
        verdicts += send(self.guard, 9, 1, 1)
        verdicts += send(self.guard, 10, 9, 6)
        self.assertIsNone(self.first_kick(verdicts))
        verdicts = send(self.guard, 19, 1, 6)
        self.assertIsNone(self.first_kick(verdicts))
        self.assertEqual(self.guard.check(20.0), KICK)

    def test_silent_gap_resets(self):
        """A flooding second, two silent seconds, then nine flooding seconds: no kick yet."""
        verdicts = send(self.guard, 0, 1, 6)
        verdicts += send(self.guard, 3, 9, 6)
        verdicts += send(self.guard, 12, 1, 1)
        self.assertIsNone(self.first_kick(verdicts))

    def test_kicks_keep_coming(self):
        """Once kicked, every further line is a kick too."""
        send(self.guard, 0, 10, 6)
        self.assertEqual([self.guard.check(10.0), self.guard.check(10.125)], [KICK, KICK])
