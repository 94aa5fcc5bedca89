"""roost.compiled: the check that a compiled module never outlives its source, and that what
``make compile`` built is what the suite runs."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pytest

from roost import compiled


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A source root with one module, and roost.compiled looking there."""
    source = tmp_path / "roost" / "xmpp" / "parser.py"
    source.parent.mkdir(parents=True)
    source.write_text("X = 1\n")
    monkeypatch.setattr(compiled, "SOURCE_ROOT", tmp_path)
    monkeypatch.setattr(compiled, "STAMP", tmp_path / "roost" / "compiled.json")
    return tmp_path


def stamp(tree: Path, modules: dict[str, str]) -> None:
    (tree / "roost" / "compiled.json").write_text(json.dumps({"modules": modules}))


def test_without_a_stamp_there_is_nothing_to_check(tree: Path) -> None:
    compiled.verify()


def test_a_source_as_compiled_passes(tree: Path) -> None:
    digest = hashlib.sha256(b"X = 1\n").hexdigest()
    stamp(tree, {"roost/xmpp/parser.py": digest})
    compiled.verify()


def test_a_source_edited_after_compiling_is_refused_with_the_fix(tree: Path) -> None:
    stamp(tree, {"roost/xmpp/parser.py": hashlib.sha256(b"X = 0\n").hexdigest()})
    with pytest.raises(compiled.StaleCompiledModule) as caught:
        compiled.verify()
    assert "parser.py changed after it was compiled" in str(caught.value)
    assert "make compile" in str(caught.value)
    assert isinstance(caught.value, ImportError)  # importing roost fails, as it should


def test_an_extension_left_by_an_earlier_build_is_refused(tree: Path) -> None:
    """A module an earlier build compiled and the last one did not (another checkout's
    MODULES) would shadow its source unchecked."""
    digest = hashlib.sha256(b"X = 1\n").hexdigest()
    stamp(tree, {"roost/xmpp/parser.py": digest})
    (tree / "roost" / "xmpp" / "parser.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    compiled.verify()  # in the stamp: fine
    old = tree / "roost" / "cluster" / "framing.cpython-311-x86_64-linux-gnu.so"
    old.parent.mkdir()
    old.write_bytes(b"")
    with pytest.raises(compiled.StaleCompiledModule) as caught:
        compiled.verify()
    assert "framing.cpython-311-x86_64-linux-gnu.so is not from the last build" in str(caught.value)
    compiled.clean()  # what `make uncompiled` and every build start with
    assert not old.exists()
    assert not (tree / "roost" / "compiled.json").exists()


def test_a_failed_build_leaves_nothing_to_check(tree: Path) -> None:
    stamp(tree, {})  # what build() writes when compiling failed
    compiled.verify()


def test_the_stamped_modules_are_the_ones_running() -> None:
    """What the stamp says was compiled is what this suite imports (``make test`` compiles)."""
    try:
        modules = json.loads(compiled.STAMP.read_text())["modules"]
    except FileNotFoundError:
        pytest.skip("nothing compiled: roost runs as plain Python here")
    for relative in modules:
        name = relative.removesuffix(".py").replace("/", ".")
        module = importlib.import_module(name)
        assert module.__file__ is not None
        assert module.__file__.endswith(".so"), f"{name} runs from {module.__file__}"
    assert set(modules) in (set(), set(compiled.MODULES))
