# -*- test-case-name: tests.test_limits -*-
"""Every bound a client can push against, named in one place, and admission.

The defaults are what C{twistd chatroom --help} and the README show; the
README says why each default is what it is.
"""

from dataclasses import dataclass

from chatservice.core.errors import ChatError
from chatservice.core.flood import FloodPolicy


class Refused(ChatError):
    """A connection or join the server will not take (full, too many per address)."""

    kind = "server-full"


@dataclass(frozen=True, slots=True)
class Limits:
    """The named limits of one service."""

    max_line: int = 4096  # bytes in one TCP line
    max_backlog: int = 1024 * 1024  # bytes of unsent output per TCP user
    flood: FloodPolicy = FloodPolicy()
    max_clients: int = 10000  # connections and UDP peers, all transports together
    max_per_ip: int = 100  # per source address; 0 means no limit
    login_timeout: float = 60.0  # seconds to choose a nick
    udp_timeout: float = 60.0  # seconds of silence before a UDP user expires
    shutdown_grace: float = 2.0  # seconds to say goodbye before closing anyway
    max_rooms: int = 1000  # rooms the service holds at once, the default room included
    max_rooms_per_user: int = 20  # rooms one user may be in at once
    max_topic: int = 300  # characters in a room topic


class Admission:
    """
    Counts clients in total and per source address, for every transport.

    TCP calls it per connection, UDP per admitted peer, so one cap holds for
    the whole service.
    """

    def __init__(self, max_clients: int, max_per_ip: int) -> None:
        self._max_clients = max_clients
        self._max_per_ip = max_per_ip
        self._total = 0
        self._per_host: dict[str, int] = {}

    @property
    def total(self) -> int:
        """How many clients are admitted now."""
        return self._total

    def admit(self, host: str) -> None:
        """
        Count one more client from C{host}.

        @raise Refused: the server is full, or C{host} has too many clients.
        """
        if self._max_clients and self._total >= self._max_clients:
            raise Refused(f"server full ({self._max_clients} clients), try later")
        held = self._per_host.get(host, 0)
        if self._max_per_ip and held >= self._max_per_ip:
            raise Refused(
                f"too many connections from your address (max {self._max_per_ip})"
            )
        self._per_host[host] = held + 1
        self._total += 1

    def release(self, host: str) -> None:
        """Count one client from C{host} gone."""
        held = self._per_host.get(host, 0)
        if held <= 0:
            return
        if held == 1:
            del self._per_host[host]
        else:
            self._per_host[host] = held - 1
        self._total -= 1
