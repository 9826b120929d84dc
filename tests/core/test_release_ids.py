"""Release ids as people and programs write them, and what is refused (never a crash)."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.ids import MAX_ID, parse_release_id


@pytest.mark.parametrize(
    ("value", "number"),
    [("R-42", 42), ("r42", 42), (" R-7 ", 7), ("42", 42), (42, 42), ("R-２", 2)],
)
def test_the_forms_people_write_are_read(value: str | int, number: int) -> None:
    assert parse_release_id(value) == number


def test_the_largest_number_the_column_holds_is_an_id_and_the_next_is_not() -> None:
    assert parse_release_id(f"R-{MAX_ID}") == MAX_ID
    for value in (f"R-{MAX_ID + 1}", "R-999999999999", 2**40):
        with pytest.raises(InvalidInput, match="release numbers go up to 2147483647"):
            parse_release_id(value)


@pytest.mark.parametrize(
    "value", ["9" * 10_000, "R-" + "9" * 13, "🚀" * 10_000, "R-", "", "R-1a", "R--1", 0, -3, True]
)
def test_anything_else_is_refused_and_quoted_short(value: str | int) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_release_id(value)
    assert len(refused.value.message) < 200, refused.value.message
    assert len(str(refused.value.details["value"])) <= 64
