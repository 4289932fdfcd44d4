# -*- test-case-name: tests.test_listen -*-
"""What C{--tcp} and C{--udp} accept, and the services that listen on them.

Stream listeners are endpoint descriptions (so C{ssl:} needs no code); a bare
port becomes C{tcp:PORT}.  Twisted has no datagram endpoints, so C{--udp}
takes a bare port or C{udp:PORT[:interface=ADDR]} and yields a L{DatagramAddress}.

L{StreamListener} and L{DatagramListener} listen in C{privilegedStartService}
(before twistd drops privileges), log one line saying where they really listen
(the kernel's port when port 0 was asked for), and turn a failure to listen
into one clear critical line before raising L{ListenFailed}.
"""

import os
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.address import IPv6Address
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from chatservice.certs import reloadable_endpoint

OFF = ("off", "none", "no")
#: Pending connections the kernel may queue for a bare --tcp port (Twisted's own
#: default, 50, overflows when hundreds of users connect at once, and the
#: kernel then makes clients retry after 1, 3, 7 seconds).
LISTEN_BACKLOG = 1024


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{what}: {text!r} is not a port number (0-65535)")
    return int(text)


def stream_description(spec: str, option: str = "--tcp") -> str | None:
    """
    C{"12345"} -> C{"tcp:12345:backlog=1024"}; an endpoint description is kept
    as it is (add C{backlog=N} to it for a deeper accept queue).

    @return: None when C{spec} turns the listener off.
    @raise ValueError: a bare value that is not a port.
    """
    spec = spec.strip()
    if spec.lower() in OFF:
        return None
    if ":" not in spec:
        return f"tcp:{_port(spec, option)}:backlog={LISTEN_BACKLOG}"
    return spec


def irc_description(spec: str) -> str | None:
    """L{stream_description} for C{--irc}."""
    return stream_description(spec, "--irc")


def web_description(spec: str) -> str | None:
    """L{stream_description} for C{--web}."""
    return stream_description(spec, "--web")


@dataclass(frozen=True, slots=True)
class DatagramAddress:
    """Where the UDP side listens."""

    port: int
    interface: str = ""


def datagram_address(spec: str) -> DatagramAddress | None:
    """
    C{"12346"}, C{"udp:12346"}, C{"udp:12346:interface=127.0.0.1"} or
    C{"udp:port=12346:interface=::1"} to a L{DatagramAddress}.

    @return: None when C{spec} turns the listener off.
    @raise ValueError: anything else.
    """
    spec = spec.strip()
    if spec.lower() in OFF:
        return None
    if ":" not in spec:
        return DatagramAddress(_port(spec, "--udp"))
    kind, _, rest = spec.partition(":")
    if kind != "udp":
        raise ValueError(f"--udp: {spec!r} must be a port or udp:PORT[:interface=ADDR]")
    port = None
    interface = ""
    # An IPv6 interface holds colons: everything after "interface=" is the address.
    head, found, address = rest.partition("interface=")
    if found:
        interface = address
        if not interface:
            raise ValueError("--udp: interface= needs an address")
    for part in head.split(":"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            port = _port(key, "--udp")
        elif key == "port":
            port = _port(value, "--udp")
        else:
            raise ValueError(f"--udp: unknown parameter {key!r}")
    if port is None:
        raise ValueError(f"--udp: {spec!r} names no port")
    return DatagramAddress(port, interface)


#: How the log names a stream listener, by its endpoint type.
_STREAM_KINDS = {"tcp": "TCP", "tcp6": "TCP", "ssl": "TLS", "unix": "UNIX"}


def stream_kind(description: str) -> str:
    """
    C{"tcp:12345"} -> C{"TCP"}, C{"ssl:6697:..."} -> C{"TLS"}, C{"unix:..."} -> C{"UNIX"}:
    the transport name the log uses for a stream listener (any other endpoint
    type is named by its prefix, in capitals).
    """
    kind = description.partition(":")[0].strip().lower()
    return _STREAM_KINDS.get(kind, kind.upper())


def address_text(address) -> str:
    """
    Where a port listens, as an operator writes it: C{127.0.0.1:12345},
    C{[::1]:12345}, or a UNIX socket's path.
    """
    port = getattr(address, "port", None)
    if port is None:
        name = getattr(address, "name", None)
        return os.fsdecode(name) if name is not None else str(address)
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{port}"
    return f"{address.host}:{port}"


def _where(error: CannotListenError) -> str:
    """C{port 12345}, C{port 12345 on 127.0.0.1}, or a UNIX socket's path."""
    if not isinstance(error.port, int):
        return os.fsdecode(error.port)
    if error.interface:
        return f"port {error.port} on {error.interface}"
    return f"port {error.port}"


def _reason(error: CannotListenError) -> str:
    """C{address already in use}, C{permission denied}: the OS's words, not a repr."""
    cause = error.socketError
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror[:1].lower() + cause.strerror[1:]
    return str(cause)


class ListenFailed(CannotListenError):
    """
    L{CannotListenError}, said plainly: its text is
    C{TCP port 12345 on 127.0.0.1: address already in use}, short enough for
    the one line twistd's daemon parent prints about a failed start.
    """

    def __init__(self, kind: str, error: CannotListenError) -> None:
        super().__init__(error.interface, error.port, error.socketError)
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.kind} {_where(self)}: {_reason(self)}"


class _Listener(Service):
    """
    What both listeners share: listen once, in C{privilegedStartService} (or
    C{startService} if nobody called that), and say so in one log line.

    @ivar port: the L{IListeningPort} once listening, else None.
    @ivar kind: C{"TCP"}, C{"TLS"}, C{"UNIX"} or C{"UDP"}, for the log.
    """

    log = Logger()
    what = "chat"

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = None
        self._listening = None  # a Deferred once asked to listen
        self._starting = False
        self._failure = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._start()

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self._start()

    def _start(self) -> None:
        self._starting = True
        try:
            self._listening = self._listen()
            self._listening.addCallbacks(self._listened, self._not_listening)
        finally:
            self._starting = False
        failure, self._failure = self._failure, None
        if failure is None:
            return
        # Every endpoint Twisted ships fails at once, so this is where it shows.
        if failure.check(CannotListenError):
            raise ListenFailed(self.kind, failure.value) from failure.value
        failure.raiseException()

    def _listen(self):
        """Start listening; return a Deferred firing with the L{IListeningPort}."""
        raise NotImplementedError()

    def _listened(self, port) -> None:
        self.port = port
        self.log.info(
            "{kind} {what} listening on {address}",
            kind=self.kind,
            what=self.what,
            address=address_text(port.getHost()),
        )

    def _not_listening(self, failure) -> None:
        """
        Say in one line why listening failed.  A failure while starting is
        raised again by L{_start}; one that comes later (from an endpoint
        that listens asynchronously) can only be logged.
        """
        if failure.check(defer.CancelledError):
            return  # stopped before it listened
        if failure.check(CannotListenError):
            error = failure.value
            self.log.critical(
                "Cannot listen on {kind} {where}: {reason}",
                kind=self.kind,
                where=_where(error),
                reason=_reason(error),
            )
        if self._starting:
            self._failure = failure
        elif not failure.check(CannotListenError):
            self.log.failure("Listening for {kind} failed", failure, kind=self.kind)

    def stopService(self):
        """Stop listening; the Deferred fires once the socket is closed."""
        super().stopService()
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if listening is not None and port is None:
            listening.cancel()  # not listening yet (or never will be)
        if port is not None:
            return port.stopListening()
        return None


class StreamListener(_Listener):
    """
    Line chat on a stream endpoint (C{tcp:}, C{ssl:}, C{unix:}...).

    @param description: an endpoint description, as L{stream_description} returns.
    """

    what = "line chat"

    def __init__(self, reactor, description: str, factory, what: str | None = None) -> None:
        super().__init__(stream_kind(description))
        if what is not None:
            self.what = what
        self.description = description
        #: The L{ReloadableCertificate} of an C{ssl:} listener (L{reload_certificate}), else None.
        self._endpoint, self.certificate = reloadable_endpoint(reactor, description)
        self._factory = factory

    def _listen(self):
        return self._endpoint.listen(self._factory)

    def reload_certificate(self) -> bool | None:
        """Load an C{ssl:} listener's certificate files again (None: not TLS)."""
        return None if self.certificate is None else self.certificate.reload()


class DatagramListener(_Listener):
    """
    UDP chat on a L{DatagramAddress} (Twisted has no datagram endpoints).

    @param max_packet_size: the most bytes one read takes from the socket.
    """

    def __init__(self, reactor, address: DatagramAddress, protocol,
                 max_packet_size: int = 8192) -> None:
        super().__init__("UDP")
        self.address = address
        self._reactor = reactor
        self._protocol = protocol
        self._max_packet_size = max_packet_size

    def _listen(self):
        return defer.execute(
            self._reactor.listenUDP,
            self.address.port,
            self._protocol,
            interface=self.address.interface,
            maxPacketSize=self._max_packet_size,
        )
