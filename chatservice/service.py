# -*- test-case-name: tests.test_service -*-
"""The service that owns the room and registry and stops in the right order."""

from twisted.application.service import MultiService
from twisted.logger import Logger

SHUTDOWN_NOTICE = "server shutting down"


class ChatService(MultiService):
    """
    The room, the registry and, as children, the listeners of every transport.

    Stopping says goodbye on every transport first (a stopped UDP port has no
    socket to say it with), waits a bounded grace for that to flush, and only
    then stops the listeners.
    """

    log = Logger()

    def __init__(self, room, registry, admission, clock, grace: float = 2.0) -> None:
        super().__init__()
        self.room = room
        self.registry = registry
        self.admission = admission
        self._clock = clock
        self._grace = grace

    def startService(self) -> None:
        self.log.info("chatroom starting")
        super().startService()

    def stopService(self):
        """Say goodbye on every transport, wait a bounded grace, then stop listening."""
        self.log.info(
            "Shutting down; saying goodbye to {count} users", count=self.room.connected
        )
        d = self.room.close_all(SHUTDOWN_NOTICE)
        d.addTimeout(self._grace, self._clock, onTimeoutCancel=self._grace_expired)
        d.addCallback(lambda _: MultiService.stopService(self))
        return d

    def _grace_expired(self, result, timeout):
        self.log.warn("Shutdown grace of {timeout}s ran out; closing anyway", timeout=timeout)
        return None
