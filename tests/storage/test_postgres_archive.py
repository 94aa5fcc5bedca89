"""How the PostgreSQL backend encodes a batch of archive records (no database needed)."""

from __future__ import annotations

import asyncio
import json

import pytest

from roost.storage import postgres_archive
from roost.storage.base import ArchiveRecord
from roost.storage.postgres_archive import (
    ROWS_AT_A_TIME,
    STATEMENT_ROWS,
    archive_parameters,
    archive_rows,
    archive_rows_in_turns,
)


def _records(count: int) -> list[ArchiveRecord]:
    return [
        ArchiveRecord(
            f"user{n % 7}@localhost",
            1_700_000_000_000_000 + n,
            f"{1_700_000_000_000_000 + n:013x}tag",
            f"peer{n % 5}@localhost/phone",
            "in" if n % 2 else "out",
            f"<message id='{n}'><body>é \"{n}\" \\ </body></message>",
        )
        for n in range(count)
    ]


@pytest.mark.parametrize("count", [1, ROWS_AT_A_TIME, ROWS_AT_A_TIME + 1, 2 * ROWS_AT_A_TIME + 3])
async def test_rows_encoded_in_turns_are_the_rows_encoded_at_once(count: int) -> None:
    records = _records(count)
    rows = await archive_rows_in_turns(records)
    assert rows == archive_rows(records)
    decoded = json.loads(rows)
    assert len(decoded) == count
    assert decoded[-1][0] == records[-1].seq


async def test_the_event_loop_runs_between_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    marks: list[str] = []

    def encode(records: list[ArchiveRecord]) -> str:
        marks.append("turn")
        return archive_rows(records)

    monkeypatch.setattr(postgres_archive, "archive_rows", encode)
    asyncio.get_running_loop().call_soon(marks.append, "other work")
    await archive_rows_in_turns(_records(3 * ROWS_AT_A_TIME))
    assert marks == ["turn", "other work", "turn", "turn"]


async def test_a_batch_is_split_into_statements_of_at_most_statement_rows() -> None:
    records = _records(2 * STATEMENT_ROWS + 1)
    parameters = await archive_parameters(records)
    assert [len(json.loads(rows)) for rows in parameters] == [STATEMENT_ROWS, STATEMENT_ROWS, 1]
    assert [row for rows in parameters for row in json.loads(rows)] == json.loads(
        archive_rows(records)
    )
