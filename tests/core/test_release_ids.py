"""Release ids as people and programs write them, and what is refused (never a crash)."""

from __future__ import annotations

import re

import pytest

from core.errors import InvalidInput
from core.ids import MAX_ID, RELEASE_ID, parse_release_id


@pytest.mark.parametrize(
    ("value", "number"),
    [("R-42", 42), ("r42", 42), (" R-7 ", 7), ("42", 42), ("R-0042", 42), (42, 42)],
)
def test_the_forms_people_write_are_read(value: str | int, number: int) -> None:
    assert parse_release_id(value) == number


def test_ids_stop_at_nine_digits_and_numbers_at_the_column() -> None:
    assert parse_release_id("R-999999999") == 999_999_999
    assert parse_release_id(MAX_ID) == MAX_ID
    for value in ("R-1000000000", "R-999999999999", MAX_ID + 1, 2**40):
        with pytest.raises(InvalidInput, match="at most 9 digits"):
            parse_release_id(value)


@pytest.mark.parametrize(
    "value",
    ["9" * 10_000, "R-" + "9" * 13, "🚀" * 10_000, "R-", "", "R-1a", "R--1", "R-0", "000", "R-２"]
    + [0, -3, True],
)
def test_anything_else_is_refused_and_quoted_short(value: str | int) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_release_id(value)
    assert len(refused.value.message) < 200, refused.value.message
    assert len(str(refused.value.details["value"])) <= 64


@pytest.mark.parametrize(
    "value",
    ["R-42", " r-0042 ", "7", "R-0", "000", "R-1000000000", "R-２", "R-1a", " 42 ", "\t42", "42\n"],
)
def test_the_schema_and_the_parser_agree(value: str) -> None:
    """Every id the doors' schema accepts parses, and every one it refuses is refused."""
    accepted = re.fullmatch(RELEASE_ID.strip("^$"), value) is not None
    try:
        parse_release_id(value)
        parsed = True
    except InvalidInput:
        parsed = False
    assert accepted == parsed, value
