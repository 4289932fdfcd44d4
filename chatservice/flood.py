# -*- test-case-name: tests.test_flood -*-
"""Per-user flood control: a token bucket, and a rule for users who never stop.

Pure logic: every call takes C{now} (seconds), so tests need no clock.
"""

from dataclasses import dataclass
from enum import Enum

#: A user flooding at more than this many times the sustained rate...
ABUSE_FACTOR = 5
#: ...for this many consecutive seconds is disconnected.
ABUSE_SECONDS = 10
#: The sender is told at most once per this many seconds that lines are dropped.
WARN_INTERVAL = 1.0


class Verdict(Enum):
    """What to do with one line."""

    PASS = "pass"
    DROP = "drop"  # over the limit, say nothing (already warned recently)
    WARN = "warn"  # over the limit, tell the sender
    KICK = "kick"  # flooding far over the limit for too long


@dataclass(frozen=True, slots=True)
class FloodPolicy:
    """C{rate} lines per second sustained, bursts of C{burst}; C{rate} 0 is off."""

    rate: float = 10.0
    burst: int = 20

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
        self._warned_at = float("-inf")
        self._window_start = now
        self._window_lines = 0
        self._abusive_seconds = 0

    def check(self, now: float) -> Verdict:
        """Account one line arriving at C{now} and say what to do with it."""
        policy = self._policy
        if not policy.enabled:
            return Verdict.PASS
        if self._count_abuse(now):
            return Verdict.KICK
        elapsed = max(0.0, now - self._refilled_at)
        self._refilled_at = now
        self._tokens = min(float(policy.burst), self._tokens + elapsed * policy.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.PASS
        if now - self._warned_at >= WARN_INTERVAL:
            self._warned_at = now
            return Verdict.WARN
        return Verdict.DROP

    def _count_abuse(self, now: float) -> bool:
        """Count lines per one-second window; true after enough abusive windows in a row."""
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            abusive = self._window_lines > ABUSE_FACTOR * self._policy.rate
            if abusive and elapsed < 2.0:
                self._abusive_seconds += 1
            else:
                self._abusive_seconds = 0  # a gap breaks the run
            self._window_start = now
            self._window_lines = 0
        self._window_lines += 1
        return self._abusive_seconds >= ABUSE_SECONDS
