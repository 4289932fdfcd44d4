# -*- test-case-name: tests.test_stats -*-
"""The service's figures, kept as they change: plain integers, no I/O.

Metrics (C{chatservice.metrics}, Prometheus) read these when scraped; the hot
path only adds to an integer in a dict whose keys never change after start,
so a scrape never walks the users and may read from another thread.
"""

#: Transports (C{participant.via}) and why users leave, as metric labels; fixed up front.
TRANSPORTS = ("tcp", "udp", "irc", "web")
DISCONNECT_REASONS = ("quit", "lost", "too_slow", "flooding", "timed_out", "shutdown",
                      "other")
_REASONS = {
    "connection lost": "lost",
    "too slow to read": "too_slow",
    "flooding": "flooding",
    "timed out": "timed_out",
    "server shutting down": "shutdown",
    "internal error": "other",
    "server error": "other",
    "delivery failed": "other",
}
#: Upper bounds (seconds) of the history write latency buckets.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def disconnect_kind(reason: str) -> str:
    """A session's end reason as a metric label: a user's own /quit reason counts as quit."""
    return _REASONS.get(reason, "quit")


class Histogram:
    """Counts of observations per bucket (cumulative when read), their sum and count."""

    def __init__(self, bounds=LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                break
        else:
            index = len(self.bounds)
        self.counts[index] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or under it) pairs, ending with +Inf."""
        out, total = [], 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


def _per(keys) -> dict:
    return dict.fromkeys(keys, 0)


class Stats:
    """
    @ivar users: users with a nick, per transport.
    @ivar received: chat messages (lines, actions, private messages) users sent, per transport.
    @ivar deliveries: events handed to users, per transport.
    @ivar disconnects: sessions ended, per L{disconnect_kind}.
    @ivar queued_bytes: output waiting in send queues (not yet the kernel's), per transport.
    @ivar udp_retransmissions: UDP frames sent again.
    @ivar history_writes: seconds each history transaction took, from asking to committed.
    @ivar history_write_failures: history transactions that failed.
    """

    def __init__(self) -> None:
        self.users = _per(TRANSPORTS)
        self.received = _per(TRANSPORTS)
        self.deliveries = _per(TRANSPORTS)
        self.disconnects = _per(DISCONNECT_REASONS)
        self.queued_bytes = _per(TRANSPORTS)
        self.udp_retransmissions = 0
        self.history_writes = Histogram()
        self.history_write_failures = 0

    def retransmitted(self) -> None:
        """A UDP frame was sent again."""
        self.udp_retransmissions += 1

    def count(self, table: dict, key: str, amount: int = 1) -> None:
        """Add C{amount} to C{table[key]}; a key not known up front is counted as given."""
        table[key] = table.get(key, 0) + amount
