"""roost.core.hooks: run and fold hooks, priorities, Stop, and changes made while running."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from roost.core.hooks import Hooks, Stop


def _recorder(calls: list[str], label: str) -> Any:
    def handler(*args: Any) -> None:
        calls.append(label)

    return handler


def _appender(label: str) -> Any:
    def handler(value: list[str], *args: Any) -> list[str]:
        return [*value, label]

    return handler


def test_run_calls_handlers_in_ascending_priority() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.add("event", _recorder(calls, "late"), priority=90)
    hooks.add("event", _recorder(calls, "early"), priority=10)
    hooks.add("event", _recorder(calls, "default"))
    hooks.add("event", _recorder(calls, "negative"), priority=-5)
    hooks.run("event")
    assert calls == ["negative", "early", "default", "late"]


def test_handlers_with_equal_priority_run_in_registration_order() -> None:
    hooks = Hooks()
    calls: list[str] = []
    for label in ["a", "b", "c", "d"]:
        hooks.add("event", _recorder(calls, label), priority=20)
    hooks.add("event", _recorder(calls, "first"), priority=19)
    hooks.add("event", _recorder(calls, "e"), priority=20)
    hooks.run("event")
    assert calls == ["first", "a", "b", "c", "d", "e"]


def test_registration_order_holds_for_handlers_that_compare_equal() -> None:
    # The same function registered twice at one priority runs twice, in order.
    hooks = Hooks()
    calls: list[str] = []
    handler = _recorder(calls, "same")
    hooks.add("event", handler)
    hooks.add("event", handler)
    hooks.run("event")
    assert calls == ["same", "same"]


def test_run_passes_its_arguments_to_every_handler() -> None:
    hooks = Hooks()
    seen: list[tuple[Any, ...]] = []
    hooks.add("event", lambda *args: seen.append(args))
    hooks.add("event", lambda *args: seen.append(args), priority=1)
    hooks.run("event", "session", 42)
    assert seen == [("session", 42), ("session", 42)]


def test_run_of_a_hook_without_handlers_does_nothing() -> None:
    Hooks().run("nothing", 1, 2)


def test_run_continues_after_a_failing_handler_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks()
    calls: list[str] = []

    def broken(*args: Any) -> None:
        raise RuntimeError("kaboom")

    hooks.add("event", _recorder(calls, "before"), priority=1)
    hooks.add("event", broken, priority=2)
    hooks.add("event", _recorder(calls, "after"), priority=3)
    with caplog.at_level(logging.ERROR, logger="roost.core.hooks"):
        hooks.run("event")
    assert calls == ["before", "after"]
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "event" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_fold_threads_the_value_through_handlers_in_priority_order() -> None:
    hooks = Hooks()
    hooks.add("filter", _appender("c"), priority=30)
    hooks.add("filter", _appender("a"), priority=10)
    hooks.add("filter", _appender("b"), priority=20)
    assert hooks.fold("filter", ["start"]) == ["start", "a", "b", "c"]


def test_fold_passes_extra_arguments_after_the_value() -> None:
    hooks = Hooks()
    hooks.add("filter", lambda value, x, y: value + x * y)
    hooks.add("filter", lambda value, x, y: value * 10, priority=60)
    assert hooks.fold("filter", 1, 2, 3) == 70


def test_fold_without_handlers_returns_the_value_unchanged() -> None:
    value = object()
    assert Hooks().fold("nothing", value) is value


def test_fold_stops_when_a_handler_returns_none() -> None:
    hooks = Hooks()
    calls: list[str] = []

    def drop(value: Any) -> None:
        calls.append("drop")

    def never(value: Any) -> Any:
        calls.append("never")
        return value

    hooks.add("filter", drop, priority=1)
    hooks.add("filter", never, priority=2)
    assert hooks.fold("filter", "stanza") is None
    assert calls == ["drop"]


def test_fold_carries_on_through_falsy_values_other_than_none() -> None:
    hooks = Hooks()
    hooks.add("filter", lambda value: 0, priority=1)
    hooks.add("filter", lambda value: value + 1, priority=2)
    hooks.add("filter", lambda value: "" if value == 1 else "wrong", priority=3)
    assert hooks.fold("filter", 99) == ""


def test_stop_ends_the_fold_with_its_value() -> None:
    hooks = Hooks()
    calls: list[str] = []
    taken_over = object()

    def take_over(value: Any) -> Stop:
        calls.append("take_over")
        return Stop(taken_over)

    def never(value: Any) -> Any:
        calls.append("never")
        return value

    hooks.add("filter", take_over, priority=1)
    hooks.add("filter", never, priority=2)
    assert hooks.fold("filter", "stanza") is taken_over
    assert calls == ["take_over"]


def test_stop_with_a_falsy_value_returns_that_value() -> None:
    hooks = Hooks()
    hooks.add("filter", lambda value: Stop(0))
    hooks.add("filter", lambda value: 1, priority=60)
    assert hooks.fold("filter", 5) == 0


def test_fold_lets_an_exception_from_a_handler_propagate() -> None:
    hooks = Hooks()

    def broken(value: Any) -> Any:
        raise ValueError("bad")

    hooks.add("filter", broken)
    with pytest.raises(ValueError, match="bad"):
        hooks.fold("filter", 1)


def test_handlers_added_during_a_fold_do_not_affect_it() -> None:
    hooks = Hooks()

    def adds_another(value: list[str]) -> list[str]:
        hooks.add("filter", _appender("added-late"), priority=99)
        hooks.add("filter", _appender("added-early"), priority=0)
        return [*value, "adder"]

    hooks.add("filter", adds_another, priority=50)
    hooks.add("filter", _appender("last"), priority=60)
    assert hooks.fold("filter", []) == ["adder", "last"]
    hooks.remove("filter", adds_another, priority=50)
    assert hooks.fold("filter", []) == ["added-early", "last", "added-late"]


def test_handlers_removed_during_a_run_still_run_this_time() -> None:
    hooks = Hooks()
    calls: list[str] = []
    second = _recorder(calls, "second")

    def removes_second(*args: Any) -> None:
        calls.append("first")
        hooks.remove("event", second, priority=2)

    hooks.add("event", removes_second, priority=1)
    hooks.add("event", second, priority=2)
    hooks.run("event")
    assert calls == ["first", "second"]
    calls.clear()
    hooks.run("event")
    assert calls == ["first"]


def test_remove_takes_out_only_the_matching_registration() -> None:
    hooks = Hooks()
    calls: list[str] = []
    a, b = _recorder(calls, "a"), _recorder(calls, "b")
    hooks.add("event", a, priority=10)
    hooks.add("event", a, priority=20)
    hooks.add("event", b, priority=10)
    hooks.remove("event", a, priority=20)
    hooks.run("event")
    assert calls == ["a", "b"]
    assert hooks.count() == 2


def test_remove_accepts_an_equal_bound_method() -> None:
    class Module:
        def __init__(self) -> None:
            self.calls = 0

        def on_event(self) -> None:
            self.calls += 1

    module = Module()
    hooks = Hooks()
    hooks.add("event", module.on_event)
    hooks.remove("event", module.on_event)  # a new bound-method object, equal to the first
    hooks.run("event")
    assert module.calls == 0
    assert not hooks.has("event")


def test_remove_of_an_unknown_handler_raises_key_error() -> None:
    hooks = Hooks()
    with pytest.raises(KeyError):
        hooks.remove("event", _recorder([], "x"))
    hooks.add("event", _recorder([], "registered"))
    with pytest.raises(KeyError):
        hooks.remove("event", _recorder([], "other"))


def test_remove_with_the_wrong_priority_raises_key_error() -> None:
    hooks = Hooks()
    handler = _recorder([], "x")
    hooks.add("event", handler, priority=10)
    with pytest.raises(KeyError):
        hooks.remove("event", handler, priority=50)
    assert hooks.has("event")


def test_has_names_and_count_reflect_registrations() -> None:
    hooks = Hooks()
    assert hooks.names() == []
    assert hooks.count() == 0
    handler = _recorder([], "x")
    hooks.add("zeta", handler)
    hooks.add("alpha", handler)
    hooks.add("alpha", handler, priority=1)
    assert hooks.has("alpha")
    assert not hooks.has("beta")
    assert hooks.names() == ["alpha", "zeta"]
    assert hooks.count() == 3
    hooks.remove("zeta", handler)
    assert not hooks.has("zeta")
    assert hooks.names() == ["alpha"]


def test_separate_hook_registries_are_independent() -> None:
    first, second = Hooks(), Hooks()
    calls: list[str] = []
    first.add("event", _recorder(calls, "first"))
    second.run("event")
    assert calls == []
    assert not second.has("event")
