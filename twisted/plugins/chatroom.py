"""The twistd dropin: names the module that holds Options and makeService."""

from twisted.application.service import ServiceMaker

chatroom = ServiceMaker(
    "chatroom",
    "chatservice.tap",
    "Chat for telnet, nc, nc -u and chatroom-client.",
    "chatroom",
)
