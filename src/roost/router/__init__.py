"""Delivery: the session registry and the routing rules of RFC 6121 §8."""
