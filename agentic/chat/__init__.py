"""Chat turns: storing messages, streaming frames to every watcher of a session, resuming streams."""
