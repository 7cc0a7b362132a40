"""The HTTP and WebSocket API of the main server (api.md)."""
