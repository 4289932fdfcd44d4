# -*- test-case-name: tests.test_nicks -*-
"""The one folding of names (nicks, and later room names) into comparison keys.

ASCII only: A-Z become a-z and nothing else changes.  C{str.lower()} would
fold the KELVIN SIGN (U+212A) to C{k} and other look-alikes to ASCII letters,
so C{/msg \\u212aate} would reach C{kate}; IRC's CASEMAPPING=ascii folds the
same way, so the IRC front-end will agree with every other transport.
"""

import re

_ASCII_UPPER_TO_LOWER = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
)


def fold(name: str) -> str:
    """The comparison key of C{name}: A-Z folded to a-z, every other character kept."""
    return name.translate(_ASCII_UPPER_TO_LOWER)


ROOM_NAME_MAX = 50
"""Characters after the C{#} in a room name."""

_ROOM_NAME = re.compile(r"#[A-Za-z0-9\-_.]{1,%d}" % ROOM_NAME_MAX)


def is_room_name(name: str) -> bool:
    """Whether C{name} is C{#} and 1 to L{ROOM_NAME_MAX} ASCII letters, digits or C{-_.}."""
    return _ROOM_NAME.fullmatch(name) is not None
