"""Front-ends: bytes to sessions and events to bytes, one module per protocol."""
