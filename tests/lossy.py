# -*- test-case-name: tests.test_reliable -*-
"""
A deterministic lossy datagram link for tests.

Real UDP loses, duplicates and reorders; a test needs the same misbehaviour every run. LossyLink
decides each datagram's fate from a seeded random.Random, and delivers survivors through the
test's clock after a small delay (plus extra delay for some, which reorders them).
"""

from __future__ import annotations

import random
from typing import Callable

from twisted.internet.interfaces import IReactorTime


class LossyLink:
    """
    One direction of a fake network: call L{send} with a datagram; C{receive} gets it later, once,
    twice or never.
    """

    def __init__(
        self,
        clock: IReactorTime,
        receive: Callable[[bytes], object],
        *,
        seed: int,
        loss: float = 0.2,
        duplicate: float = 0.05,
        reorder: float = 0.1,
        delay: float = 0.01,
    ) -> None:
        self._clock = clock
        self._receive = receive
        self._random = random.Random(seed)
        self._loss = loss
        self._duplicate = duplicate
        self._reorder = reorder
        self._delay = delay
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0
        self.delayed = 0

    def send(self, datagram: bytes) -> None:
        """Put one datagram on the fake wire."""
        self.sent += 1
        if self._random.random() < self._loss:
            self.dropped += 1
            return
        copies = 1
        if self._random.random() < self._duplicate:
            self.duplicated += 1
            copies = 2
        for _ in range(copies):
            delay = self._delay
            if self._random.random() < self._reorder:
                self.delayed += 1
                delay += self._delay * 5 * self._random.random()
            self._clock.callLater(delay, self._receive, datagram)
