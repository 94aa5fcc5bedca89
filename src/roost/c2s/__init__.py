"""Client-to-server connections: listeners, the TLS layer and the stream state machine."""
