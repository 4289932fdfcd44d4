# -*- test-case-name: tests.test_directwrite -*-
"""
Send at once when nothing is queued: a chat delivery costs one C{send}, not three system calls.

C{transport.write} on a TCP connection always buffers and registers the socket
for writing; the reactor then polls, sends, and unregisters it: two
C{epoll_ctl} calls and a poll wake-up around every C{send}.  A chat server
makes one small write per recipient per turn, mostly to sockets with nothing
queued, so in a room of ten that is most of the work (the many-rooms profile:
18 % of the CPU in registering and unregistering writers).  When Twisted holds
nothing unsent for the connection, the bytes go straight to the socket, in
order; whatever the kernel does not take is handed to C{transport.write} as
usual, which queues it, pauses the producer when full and reports errors.

This reads attributes of L{twisted.internet.tcp.Connection} that are not
public API (C{socket}, C{dataBuffer}, C{_tempDataLen}, C{_writeDisconnected}),
so it applies to exactly that class without TLS; anything else (TLS, test
transports, a future Twisted without those attributes) gets
C{transport.write} itself.
"""

from twisted.internet import tcp


def direct_writer(transport):
    """A function writing bytes to C{transport}: at once if it can, else via C{transport.write}."""
    write = transport.write
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", True):
        return write
    try:
        transport.dataBuffer, transport._tempDataLen, transport._writeDisconnected
        send = transport.socket.send
    except AttributeError:
        return write

    def write_now(data: bytes) -> None:
        if (transport.dataBuffer or transport._tempDataLen or not transport.connected
                or transport.disconnecting or transport._writeDisconnected or transport.TLS):
            write(data)
            return
        try:
            sent = send(data)
        except OSError:  # EAGAIN, or an error the reactor will report when it writes
            sent = 0
        if sent < len(data):
            write(data[sent:] if sent else data)

    return write_now
