"""The core: people, rooms and events; never a socket, the global reactor or twistd."""
