"""chatroom: one chat room for telnet, nc, nc -u and the bundled client.

Importing the package starts nothing; the twistd plugin builds the service.
"""

__version__ = "0.1.0"
