# -*- test-case-name: tests.test_service -*-
"""The service that owns the hub and registry and stops in the right order."""

import os
import signal

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

SHUTDOWN_NOTICE = "server shutting down"


class ChatService(MultiService):
    """
    The hub, the registry and, as children, the listeners of every transport
    (and the history store, which stops after everyone's leave is recorded).

    Stopping goes in three steps.  First the stream listeners close, so a
    connection that comes during the shutdown is refused by the kernel instead
    of being accepted and cut.  Then everyone connected is told goodbye, and
    the service waits a bounded grace for that to flush (TCP) or be
    acknowledged (UDP).  Last the datagram port and any other child stop: a
    stopped UDP port has no socket to say goodbye with.

    Listeners say which they are by how they are added:
    L{add_stream_listener} or L{add_datagram_listener}; any other child stops
    with the datagram listeners, after the goodbyes.
    """

    log = Logger()

    def __init__(self, hub, registry, admission, clock, grace: float = 2.0,
                 owns_process: bool = False, exit_if_cannot_listen: bool = False,
                 pidfile: str = "", log_observer=None) -> None:
        """
        @param owns_process: this service is the process (twistd's or twist's,
            on the real reactor in the main thread).  It then takes over
            SIGTERM and SIGINT so that a requested stop exits with status 0
            (twistd would otherwise re-raise the signal at exit).
        @param exit_if_cannot_listen: a listener that cannot listen ends the
            process with status 1 after its one log line, instead of raising
            (a traceback would bury the line).  Not for twistd's daemon mode:
            there the waiting parent learns of a failure only from the
            exception, which it reports in one line before exiting 1.
        @param pidfile: twistd's pid file, if any.  twistd removes it when
            starting fails with an exception; exiting bypasses that, so this
            service removes it (if it still names this process) before it exits.
        @param log_observer: an L{ILogObserver} to give the twistd Application
            this service is added to (see L{chatservice.logs}); None leaves
            the Application's logging alone.
        """
        super().__init__()
        self._owns_process = owns_process
        self._exit_if_cannot_listen = exit_if_cannot_listen
        self._pidfile = pidfile
        self._log_observer = log_observer
        self._stop_signalled = False
        self._stream_listeners: list = []
        self.hub = hub
        self.registry = registry
        self.admission = admission
        self._clock = clock
        self._grace = grace

    # -- wiring ------------------------------------------------------------

    def add_stream_listener(self, listener) -> None:
        """Add a child that accepts connections: it stops first, before the goodbyes."""
        listener.setServiceParent(self)
        self._stream_listeners.append(listener)

    def add_datagram_listener(self, listener) -> None:
        """Add a child that carries datagrams: it stops last, after the goodbyes."""
        listener.setServiceParent(self)

    def setServiceParent(self, parent) -> None:
        """
        Join C{parent}; under twistd that is the Application, whose
        L{ILogObserver} component twistd logs to, so set ours there.
        """
        super().setServiceParent(parent)
        if self._log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._log_observer)

    # -- starting ----------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Listen (twistd calls this before dropping privileges)."""
        try:
            super().privilegedStartService()
        except CannotListenError:
            if self._exit_if_cannot_listen:
                self._exit_1()
            raise

    def startService(self) -> None:
        self.log.info("chatroom starting")
        try:
            super().startService()
        except CannotListenError:
            if self._exit_if_cannot_listen:
                self._exit_1()
            raise
        if self._owns_process:
            # twistd starts services before the reactor runs and installs its
            # own handlers; ours must come after those.
            self._clock.callWhenRunning(self._install_signal_handlers)

    def _exit_1(self) -> None:
        """End the process with status 1: the listener has logged why, in one line."""
        if self._pidfile:
            try:
                with open(self._pidfile) as f:
                    ours = f.read().strip() == str(os.getpid())
                if ours:
                    os.remove(self._pidfile)
            except FileNotFoundError:
                pass
        raise SystemExit(1) from None

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_requested)
        signal.signal(signal.SIGHUP, self._reload_requested)

    def _reload_requested(self, signum, frame) -> None:
        """SIGHUP: reload the TLS certificates, in the reactor's thread."""
        self._clock.callFromThread(self.reload_certificates)

    def reload_certificates(self) -> tuple[int, int]:
        """
        Load every C{ssl:} listener's certificate files again, for new connections
        (open ones keep theirs).  A listener whose new files cannot be loaded keeps
        its certificate; each outcome is logged.

        @return: (reloaded, failed) listener counts.
        """
        outcomes = [listener.reload_certificate() for listener in self._stream_listeners]
        reloaded, failed = outcomes.count(True), outcomes.count(False)
        self.log.info("SIGHUP: {reloaded} TLS certificate(s) reloaded, {failed} kept after an "
                      "error", reloaded=reloaded, failed=failed)
        return reloaded, failed

    def _stop_requested(self, signum, frame) -> None:
        """SIGTERM or SIGINT: stop the reactor (which stops us) and exit 0."""
        if self._stop_signalled:
            return  # already stopping; the grace bounds how long that takes
        self._stop_signalled = True
        self.log.info("Received {signal}, shutting down", signal=signal.Signals(signum).name)
        self._clock.callFromThread(self._clock.stop)

    # -- stopping ----------------------------------------------------------

    def stopService(self) -> defer.Deferred:
        """
        Stop accepting connections, say goodbye on every transport, wait a
        bounded grace, then stop the datagram listeners and other children.
        """
        Service.stopService(self)
        accepting = [
            defer.maybeDeferred(listener.stopService)
            for listener in reversed(self._stream_listeners)
            if listener.running
        ]
        d = defer.DeferredList(accepting, consumeErrors=True)
        d.addCallback(self._stopped_accepting)
        d.addCallback(lambda _: self._say_goodbye())
        d.addCallback(lambda _: self._stop_the_rest())
        return d

    def _stopped_accepting(self, results) -> None:
        for succeeded, result in results:
            if not succeeded:
                self.log.failure("A listener failed to stop", result)

    def _say_goodbye(self) -> defer.Deferred:
        self.log.info(
            "Shutting down; saying goodbye to {count} users", count=self.hub.connected
        )
        goodbyes = self.hub.close_all(SHUTDOWN_NOTICE)
        # The grace ends the wait, not the goodbyes: cancelling them would hand
        # each session's close a CancelledError, which it logs as a failure.
        d = defer.Deferred()
        goodbyes.addBoth(lambda _: None if d.called else d.callback(None))
        d.addTimeout(self._grace, self._clock, onTimeoutCancel=self._grace_expired)
        return d

    def _grace_expired(self, result, timeout):
        self.log.warn("Shutdown grace of {timeout}s ran out; closing anyway", timeout=timeout)
        return None

    def _stop_the_rest(self) -> defer.Deferred:
        """Stop every child but the stream listeners (already stopped), last added first."""
        rest = [child for child in reversed(list(self)) if child not in self._stream_listeners]
        d = defer.DeferredList(
            [defer.maybeDeferred(child.stopService) for child in rest], consumeErrors=True
        )
        d.addCallback(self._log_stop_failures)
        return d

    def _log_stop_failures(self, results) -> None:
        for stopped, result in results:
            if not stopped:
                self.log.failure("Stopping a service failed", result)

