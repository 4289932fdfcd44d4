"""
Micro-benchmark of the TCP receive path: lines in through L{LineChatProtocol}, fanned out to a
room of 10 on C{StringTransport}s, in one process and with no sockets, so it measures only the
Python work per received line.

    python -m bench.receive_path [LINES_PER_READ]    (default 20; 1 is one line per read)

Prints the best of five rounds, in microseconds per received line.  Run it in a checkout of an
older commit with the same command to compare.
"""

import sys
import time

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatservice.core.flood import FloodPolicy
from chatservice.core.hub import Hub
from chatservice.core.limits import Admission, Limits
from chatservice.core.nicks import NickRegistry
from chatservice.frontends.line import LineChatFactory

USERS = 10
ROUNDS = 200
LINE = b"a fixed 32-byte text line here!!\n"


def main() -> None:
    per_read = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    clock = Clock()
    factory = LineChatFactory(
        Hub(clock), NickRegistry(), clock, Admission(0, 0), Limits(flood=FloodPolicy(rate=0))
    )
    users = []
    for index in range(USERS):
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000 + index))
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"u%d\n" % index)
        users.append((proto, transport))
    clock.advance(0)
    chunk = LINE * per_read
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(ROUNDS):
            for proto, _transport in users:
                proto.dataReceived(chunk)
            clock.advance(0)
            for _proto, transport in users:
                transport.clear()
        best = min(best, time.perf_counter() - started)
    lines = ROUNDS * USERS * per_read
    print(f"{best / lines * 1e6:.2f} us per received line "
          f"({USERS} users, {per_read} lines per read)")


if __name__ == "__main__":
    main()
