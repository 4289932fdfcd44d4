"""The cost of one end-of-turn fan-out, in process: does a sender's view cost its own lines?

Usage: ``python -m bench.turn_cost``.  N users in one room on a hub; in each turn S of them say
one line; every user's batch is encoded as the TCP front-end does (shared runs encoded once,
each sender's lines cut out by slicing).  If a sender's view cost O(the turn), a turn in which
all 500 users send would cost far more than 5 times one in which 100 send (the output is 5
times larger); before the hub reshape it cost about 22 times.
"""

import time

from twisted.internet.task import Clock

from chatservice.core.hub import Hub
from chatservice.core.render import RenderCache


class _Reader:
    """A participant that encodes what it is handed, as a TCP connection does, and counts bytes."""

    via = "tcp"
    peer = "127.0.0.1:0"
    room = None

    def __init__(self, nick: str, render: RenderCache) -> None:
        self.nick = nick
        self.render = render
        self.received = 0

    def deliver(self, batch) -> None:
        self.received += len(self.render.encode(batch, self.room))


def turn_ms(users: int, senders: int, turns: int = 50) -> float:
    """Milliseconds per turn in which C{senders} of C{users} say one line each."""
    clock = Clock()
    clock.advance(1.8e9)
    hub = Hub(clock)
    render = RenderCache()
    readers = [_Reader(f"u{i}", render) for i in range(users)]
    for reader in readers:
        hub.arrive(reader)
        hub.join(reader, "#lobby")
        reader.room = "#lobby"
    hub.flush()
    room = hub.default_room
    started = time.perf_counter()
    for _ in range(turns):
        for reader in readers[:senders]:
            hub.say(reader, room, "hello everyone in the room, a typical chat line")
        hub.flush()
    return (time.perf_counter() - started) / turns * 1000


def main() -> None:
    for users in (100, 500):
        some, everyone = turn_ms(users, users // 5), turn_ms(users, users)
        print(f"N={users}: a turn with {users // 5} senders {some:.2f} ms, with all {users} "
              f"{everyone:.2f} ms: {everyone / some:.1f}x (the output grows 5x)")


if __name__ == "__main__":
    main()
