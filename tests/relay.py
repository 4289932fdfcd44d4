# -*- test-case-name: tests.test_udp -*-
"""A lossy, reordering UDP relay for tests and the benchmark.

Clients send to the relay instead of the server. For each distinct client address the relay
opens its own upstream UDP socket towards the server, so the server sees one address per client,
and forwards datagrams both ways. In each direction it drops a seeded fraction of datagrams and
holds some back to deliver them after the next one (or after a short flush delay, so nothing is
held forever). Everything is driven by the reactor passed in; nothing is printed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import DatagramProtocol

UP = "up"  # client -> server
DOWN = "down"  # server -> client


@dataclass
class RelayCounters:
    """How many datagrams the relay forwarded, dropped and reordered, per direction."""

    forwarded: dict = field(default_factory=lambda: {UP: 0, DOWN: 0})
    dropped: dict = field(default_factory=lambda: {UP: 0, DOWN: 0})
    reordered: dict = field(default_factory=lambda: {UP: 0, DOWN: 0})


class _Upstream(DatagramProtocol):
    """The relay's socket towards the server on behalf of one client address."""

    def __init__(self, relay: "LossyRelay", client: tuple[str, int]) -> None:
        self._relay = relay
        self._client = client

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """A datagram from the server for our client: pass it through the lossy path."""
        if addr == self._relay.target:
            self._relay._offer(DOWN, self._client, datagram)


class _Flow:
    """Per client and direction: the datagram held back for reordering, and its flush timer."""

    __slots__ = ("held", "timer")

    def __init__(self) -> None:
        self.held: bytes | None = None
        self.timer: IDelayedCall | None = None


class LossyRelay(DatagramProtocol):
    """Forward datagrams between clients and one server, dropping and reordering some.

    Listen on it with C{reactor.listenUDP(0, relay, interface="127.0.0.1")} and point clients
    at that port. Drops use C{random.Random(seed)}, so a run is repeatable for a given order of
    arrivals.

    @ivar loss: fraction of datagrams dropped in each direction (may be changed while running).
    @ivar reorder: fraction of forwarded datagrams held back behind the next one.
    @ivar counters: a L{RelayCounters} with forwarded/dropped/reordered per direction.
    """

    flush_delay = 0.02  # seconds a held-back datagram waits at most

    def __init__(self, reactor, target: tuple[str, int], loss: float, seed: int,
                 reorder: float = 0.05) -> None:
        """
        @param reactor: provides C{listenUDP} and C{callLater}.
        @param target: the server's (host, port).
        @param loss: fraction in [0, 1) of datagrams dropped, each direction independently.
        @param seed: seed for the drop/reorder decisions.
        @param reorder: fraction in [0, 1) of datagrams delivered after their successor.
        """
        self._reactor = reactor
        self.target = target
        self.loss = loss
        self.reorder = reorder
        self._random = random.Random(seed)
        self._upstreams: dict[tuple[str, int], IListeningPort] = {}
        self._flows: dict[tuple[str, tuple[str, int]], _Flow] = {}
        self.counters = RelayCounters()

    @property
    def forwarded(self) -> dict:
        """Datagrams forwarded per direction (C{"up"}: client to server, C{"down"}: back)."""
        return self.counters.forwarded

    @property
    def dropped(self) -> dict:
        """Datagrams dropped per direction."""
        return self.counters.dropped

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """A datagram from a client: open its upstream socket if new, then forward lossily."""
        if addr not in self._upstreams:
            self._upstreams[addr] = self._reactor.listenUDP(
                0, _Upstream(self, addr), interface="127.0.0.1")
        self._offer(UP, addr, datagram)

    def _offer(self, direction: str, client: tuple[str, int], datagram: bytes) -> None:
        if self._random.random() < self.loss:
            self.counters.dropped[direction] += 1
            return
        flow = self._flows.get((direction, client))
        if flow is None:
            flow = self._flows[(direction, client)] = _Flow()
        if flow.held is not None:
            # This datagram overtakes the held one: send it first, then release the held one.
            held, flow.held = flow.held, None
            if flow.timer is not None and flow.timer.active():
                flow.timer.cancel()
            flow.timer = None
            self._send(direction, client, datagram)
            self._send(direction, client, held)
            return
        if self.reorder and self._random.random() < self.reorder:
            flow.held = datagram
            self.counters.reordered[direction] += 1
            flow.timer = self._reactor.callLater(self.flush_delay, self._flush, direction, client)
            return
        self._send(direction, client, datagram)

    def _flush(self, direction: str, client: tuple[str, int]) -> None:
        flow = self._flows.get((direction, client))
        if flow is None:
            return
        flow.timer = None
        if flow.held is not None:
            held, flow.held = flow.held, None
            self._send(direction, client, held)

    def _send(self, direction: str, client: tuple[str, int], datagram: bytes) -> None:
        try:
            if direction == UP:
                port = self._upstreams.get(client)
                if port is None:
                    return
                port.write(datagram, self.target)
            else:
                if self.transport is None:
                    return
                self.transport.write(datagram, client)
        except OSError:
            # A full socket buffer on loopback is just another lost datagram.
            self.counters.dropped[direction] += 1
            return
        self.counters.forwarded[direction] += 1

    def stop(self) -> defer.Deferred:
        """Cancel pending flush timers and close every upstream port (the caller closes ours).

        @return: a Deferred that fires once every upstream port has stopped listening.
        """
        for flow in self._flows.values():
            if flow.timer is not None and flow.timer.active():
                flow.timer.cancel()
            flow.timer = None
            flow.held = None
        self._flows.clear()
        ports, self._upstreams = list(self._upstreams.values()), {}
        return defer.gatherResults(
            [defer.maybeDeferred(port.stopListening) for port in ports], consumeErrors=True)
