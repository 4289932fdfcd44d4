"""Back ends the hub feeds: the history store (later a Redis bridge)."""
