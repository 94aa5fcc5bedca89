"""The message path's hottest modules compiled to C with mypyc, and the check that keeps a
compiled module from outliving its source.

Why. A chat message spends most of the event loop's time in the interpreter (``perf``: 62 %,
27 % in the bytecode loop itself): parsing, building and serializing elements, running hooks.
mypyc compiles type-annotated modules (roost is ``mypy --strict`` clean) into C extensions
with the same behaviour and, for these, ~30 % more messages per second per core
(docs/benchmarks.md). It ships with mypy, which the project already uses; nothing is written
by hand. Without a C compiler, or when the build fails, roost runs the same modules as plain
Python.

How. ``python src/roost/compiled.py build`` (``make compile``, which ``make up`` and ``make
test`` run) compiles :data:`MODULES` in place, next to their sources under ``src/``, and writes
a stamp, ``compiled.json``, with a hash of each source it compiled; ``clean`` removes what it
built. It runs as a script, not as ``-m roost.compiled``: importing the package would run the
check below, which a stale build must not stop from being rebuilt.

The hazard. Python imports an extension module in preference to the ``.py`` beside it, so a
source edited after compiling would silently not run. Importing :mod:`roost` therefore calls
:func:`verify`, which compares the sources with the stamp's hashes (a few milliseconds, once)
and refuses to go on when they differ, naming the command that fixes it. With no stamp (a plain
install, or nothing compiled) there is nothing to check.

Interpreted classes cannot subclass compiled ones, so a subclass of a compiled class is
compiled with it (``Stamped`` of ``Element``, ``WebSocketParser`` of ``XMLStreamParser``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Final

__all__ = ["MODULES", "StaleCompiledModule", "verify"]

PACKAGE: Final = Path(__file__).resolve().parent
SOURCE_ROOT: Final = PACKAGE.parent  # src/, where mypyc runs and puts what it builds
STAMP: Final = PACKAGE / "compiled.json"

#: Modules compiled, as paths relative to ``src/``.
MODULES: Final = (
    "roost/xmpp/parser.py",
    "roost/xmpp/element.py",
    "roost/core/hooks.py",
    "roost/modules/mam_records.py",
    "roost/c2s/framing.py",
    "roost/xmpp/jid.py",
    "roost/router/router.py",
    "roost/router/registry.py",
    "roost/c2s/connection.py",
    "roost/c2s/websocket.py",
    "roost/c2s/sm.py",
    "roost/c2s/session.py",
    "roost/modules/mam_path.py",
    "roost/modules/mam.py",
    "roost/storage/sqlite_archive.py",
)


class StaleCompiledModule(ImportError):
    """A compiled module's source changed after it was compiled."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify() -> None:
    """Raise :class:`StaleCompiledModule` when a compiled module's source has changed since."""
    try:
        stamp = json.loads(STAMP.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    compiled: dict[str, str] = stamp.get("modules", {})
    for extension in _extensions():
        source = extension.with_name(extension.name.split(".")[0] + ".py")
        if source.relative_to(SOURCE_ROOT).as_posix() not in compiled:
            # Left by an earlier build whose MODULES held it (another checkout): it would
            # shadow its source unchecked.
            raise StaleCompiledModule(
                f"{extension} is not from the last build: run `make compile` to build again, "
                "or `make uncompiled` to run every module as plain Python"
            )
    for relative, digest in compiled.items():
        source = SOURCE_ROOT / relative
        if source.is_file() and _digest(source) != digest:
            raise StaleCompiledModule(
                f"{source} changed after it was compiled: run `make compile` to compile it "
                "again, or `make uncompiled` to run every module as plain Python"
            )


def _extensions() -> list[Path]:
    """Every extension module in the package: roost ships none but what a build makes."""
    return sorted((SOURCE_ROOT / "roost").rglob("*.so"))


def _built() -> list[Path]:
    """What builds left under ``src/``: the modules' extensions and mypyc's shared library,
    also those of modules an earlier build compiled and this one does not."""
    return [*SOURCE_ROOT.glob("*__mypyc*.so"), *_extensions()]


def clean() -> None:
    for path in _built():
        path.unlink()
    STAMP.unlink(missing_ok=True)


def build() -> bool:
    """Compile :data:`MODULES` in place; True when they were. Always leaves a stamp."""
    import subprocess  # only here: importing roost runs verify(), which needs none of this

    clean()
    done = subprocess.run(
        [sys.executable, "-m", "mypyc", *MODULES],
        cwd=SOURCE_ROOT,
        capture_output=True,
        text=True,
    )
    # mypyc's work directory (C sources, objects, a setup.py) is not needed once the extensions
    # sit beside their sources, and would otherwise be linted and type-checked as part of src/.
    shutil.rmtree(SOURCE_ROOT / "build", ignore_errors=True)
    if done.returncode != 0:
        clean()
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        print(f"roost: compiling failed; running as plain Python.\n{tail}", file=sys.stderr)
        STAMP.write_text(json.dumps({"modules": {}}), encoding="utf-8")
        return False
    digests = {relative: _digest(SOURCE_ROOT / relative) for relative in MODULES}
    STAMP.write_text(json.dumps({"modules": digests}, indent=1), encoding="utf-8")
    print(f"roost: compiled {len(MODULES)} modules with mypyc", file=sys.stderr)
    return True


def main(argv: list[str]) -> int:
    if argv == ["build"]:
        build()  # a failed build still leaves a working, uncompiled roost
        return 0
    if argv == ["clean"]:
        clean()
        return 0
    print("usage: python src/roost/compiled.py build|clean", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
