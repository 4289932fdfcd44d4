# -*- test-case-name: tests.test_listen -*-
"""What C{--tcp} and C{--udp} accept, turned into what Twisted listens on.

Stream listeners are endpoint descriptions (so C{ssl:} needs no code); a bare
port becomes C{tcp:PORT}.  Twisted has no datagram endpoints, so C{--udp}
takes a bare port or C{udp:PORT[:interface=ADDR]} and yields a L{DatagramAddress}.
"""

from dataclasses import dataclass

OFF = ("off", "none", "no")
#: Pending connections the kernel may queue for a bare --tcp port (Twisted's own
#: default, 50, overflows when hundreds of users connect at once, and the
#: kernel then makes clients retry after 1, 3, 7 seconds).
LISTEN_BACKLOG = 1024


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{what}: {text!r} is not a port number (0-65535)")
    return int(text)


def stream_description(spec: str) -> str | None:
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
        return f"tcp:{_port(spec, '--tcp')}:backlog={LISTEN_BACKLOG}"
    return spec


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
