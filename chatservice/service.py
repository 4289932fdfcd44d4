# -*- test-case-name: tests.test_service -*-
"""The service that owns the room and registry and stops in the right order."""

import signal

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

    def __init__(self, room, registry, admission, clock, grace: float = 2.0,
                 handle_signals: bool = False) -> None:
        """
        @param handle_signals: take over SIGTERM and SIGINT so that a requested
            stop exits with status 0 (twistd would otherwise re-raise the
            signal at exit); only for the real reactor in the main thread.
        """
        super().__init__()
        self._handle_signals = handle_signals
        self._stop_signalled = False
        self.room = room
        self.registry = registry
        self.admission = admission
        self._clock = clock
        self._grace = grace

    def startService(self) -> None:
        self.log.info("chatroom starting")
        super().startService()
        if self._handle_signals:
            # twistd starts services before the reactor runs and installs its
            # own handlers; ours must come after those.
            self._clock.callWhenRunning(self._install_signal_handlers)

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_requested)

    def _stop_requested(self, signum, frame) -> None:
        """SIGTERM or SIGINT: stop the reactor (which stops us) and exit 0."""
        if self._stop_signalled:
            return  # already stopping; the grace bounds how long that takes
        self._stop_signalled = True
        self.log.info("Received {signal}, shutting down", signal=signal.Signals(signum).name)
        self._clock.callFromThread(self._clock.stop)

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
