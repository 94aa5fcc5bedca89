"""Process groups: full-sync build/apply time of 100,000 members, and memory per member.

    .venv/bin/python -m benchmarks.pg_sync

A node joining a cluster receives one Sync per peer with everything that peer owns; this
measures building that message on the owner, applying it on the joiner, and its msgpack size
and coding time, for 100,000 members spread over groups of 1, 10 and 100,000 members. Join+leave
throughput is measured with ``roost bench run`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgspec

from roost.cluster.pg import Scope
from roost.cluster.pg_messages import Sync, message_type

N = 100_000
Member = tuple[str, str, int]


def filled(node: str, group_size: int) -> Scope[str, Member]:
    scope: Scope[str, Member] = Scope("bench", node, incarnation=2)
    for i in range(N):
        scope.join(f"user{i // group_size}@example.com", (f"session-{i}", "res", 0))
    return scope


def best(function: Callable[[], Any], runs: int = 5) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def joiner() -> Scope[str, Member]:
    scope: Scope[str, Member] = Scope("bench", "a", incarnation=1)
    scope.peer_up("b")
    scope.outgoing()
    return scope


def main() -> None:
    decoder = msgspec.msgpack.Decoder(message_type(str, Member))
    encoder = msgspec.msgpack.Encoder()
    for group_size in (1, 10, N):
        owner = filled("b", group_size)
        build, sync = best(lambda owner=owner: Sync(owner.incarnation, owner._local_groups()))  # type: ignore[misc]
        scopes = [joiner() for _ in range(5)]
        apply, _ = best(lambda scopes=scopes, sync=sync: scopes.pop().receive("b", sync))  # type: ignore[misc]
        size_time, raw = best(lambda sync=sync: encoder.encode(sync))  # type: ignore[misc]
        decode, _ = best(lambda raw=raw: decoder.decode(raw))  # type: ignore[misc]
        print(
            f"groups of {group_size:>6}: build {build * 1e3:6.1f} ms, apply to a joining node "
            f"{apply * 1e3:6.1f} ms, msgpack {len(raw) / 1e6:.1f} MB "
            f"(encode {size_time * 1e3:.1f} ms, decode {decode * 1e3:.1f} ms)"
        )
    for group_size in (1, 10, 1000):
        gc.collect()
        tracemalloc.start()
        owner = filled("b", group_size)
        for group in owner.which_groups():
            owner.members(group)
        local = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        sync = Sync(owner.incarnation, owner._local_groups())
        gc.collect()
        tracemalloc.start()
        scope = joiner()
        scope.receive("b", sync)
        for group in scope.which_groups():
            scope.members(group)
        remote = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        print(
            f"memory, groups of {group_size:>4}: {local / N:5.0f} B per local member, "
            f"{remote / N:5.0f} B per remote member (its value is shared with the sync message)"
        )


if __name__ == "__main__":
    main()
