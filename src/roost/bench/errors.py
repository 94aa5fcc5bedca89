"""The two ways a micro-benchmark fails, kept apart because callers treat them differently.

``TargetError`` (a ``ValueError``) means the request is wrong: a target or hook cannot be
imported or compiled, or its signature does not fit the state convention. It is raised before
anything runs; the CLI reports it as a usage error (exit code 2).

``BenchmarkError`` means the code under test failed while being measured: the runner or a
hook raised, or a worker process died. The CLI reports it as a failed command (exit code 1),
with the traceback from wherever the error happened, including a worker process.
"""

from __future__ import annotations


class TargetError(ValueError):
    """A target or hook cannot be imported, compiled or called as it would need to be."""


class BenchmarkError(RuntimeError):
    """The code under test failed during a run."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details
