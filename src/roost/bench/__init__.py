"""roost bench: micro-benchmarks and an XMPP load generator."""
