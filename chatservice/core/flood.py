# -*- test-case-name: tests.test_flood -*-
"""Per-user flood control: a token bucket that delays lines, and a rule for users who never stop.

Lines over the rate are not dropped: the session holds them and lets them go
at the sustained rate, in order.  TCP users are slowed by not reading their
socket (the kernel holds the excess); UDP users, who cannot be paused, get a
bounded queue (L{FloodPolicy.queue}) and refusals past it.

Pure logic: every call takes C{now} (seconds), so tests need no clock.
"""

from dataclasses import dataclass

#: A user whose lines keep arriving at more than this many times the sustained rate...
ABUSE_FACTOR = 5
#: ...for this many consecutive seconds is disconnected.  Only a sender that
#: cannot be paused (UDP) can do that: a paused TCP socket delivers no lines.
ABUSE_SECONDS = 10
#: Float tolerance: a bucket this close to a whole token has one.  Without it a
#: refill that lands a rounding error short of 1.0 asks for a wait so small that
#: the clock does not move, and the same question comes back for ever.
_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class FloodPolicy:
    """
    C{rate} lines per second sustained, bursts of C{burst}; C{rate} 0 is off.

    C{queue} bounds the lines held back for a user who cannot be paused (UDP);
    further lines are refused.
    """

    rate: float = 10.0
    burst: int = 20
    queue: int = 100

    @property
    def enabled(self) -> bool:
        """Whether flood control is on (a rate of 0 turns it off)."""
        return self.rate > 0


class FloodGuard:
    """One user's bucket and abuse counter."""

    def __init__(self, policy: FloodPolicy, now: float) -> None:
        self._policy = policy
        self._tokens = float(policy.burst)
        self._refilled_at = now
        self._window_start = now
        self._window_lines = 0
        self._abusive_seconds = 0

    def take(self, now: float) -> float:
        """
        Spend one token for a line going out at C{now}, if there is one.

        @return: 0 if the line may go now (a token was spent), otherwise the
            seconds until a token will be there (nothing was spent).
        """
        policy = self._policy
        if not policy.enabled:
            return 0.0
        elapsed = max(0.0, now - self._refilled_at)
        self._refilled_at = now
        self._tokens = min(float(policy.burst), self._tokens + elapsed * policy.rate)
        if self._tokens >= 1.0 - _SLACK:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / policy.rate

    def abusive(self, now: float) -> bool:
        """
        Count one line arriving at C{now}; true once lines have arrived at more
        than L{ABUSE_FACTOR} times the rate for L{ABUSE_SECONDS} seconds in a row.
        """
        policy = self._policy
        if not policy.enabled:
            return False
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            abusive = self._window_lines > ABUSE_FACTOR * policy.rate
            if abusive and elapsed < 2.0:
                self._abusive_seconds += 1
            else:
                self._abusive_seconds = 0  # a gap breaks the run
            self._window_start = now
            self._window_lines = 0
        self._window_lines += 1
        return self._abusive_seconds >= ABUSE_SECONDS
