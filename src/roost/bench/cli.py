"""``roost bench`` subcommands (placeholder until the benchmark tools land)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("bench", help="benchmarks")
    parser.set_defaults(handler=lambda args: 0)
