"""The pure parts of coupons: patterns, drawing codes, reading an import's lines."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.coupons.imports import parse_codes, parse_expiry
from domain.coupons.patterns import LETTERS, capacity, check_pattern, draw, draw_distinct
from domain.errors import InvalidInput

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_capacity_counts_digits_and_letters() -> None:
    assert capacity("WELCOME-####-????") == 10**4 * 23**4
    assert not set("ILO") & set(LETTERS)


@given(
    st.text(alphabet="AB-#?", min_size=1, max_size=12).filter(
        lambda p: p[0] not in "-" and ("#" in p or "?" in p)
    )
)
def test_a_drawn_code_matches_its_pattern(pattern: str) -> None:
    code = draw(pattern, random.Random(1).choice)
    assert len(code) == len(pattern)
    for p, c in zip(pattern, code, strict=True):
        assert c.isdigit() if p == "#" else c in LETTERS if p == "?" else c == p


def test_distinct_draws_skip_what_is_taken() -> None:
    taken = {f"C{i}" for i in range(9)}
    assert draw_distinct("C#", 1, taken, random.Random(3).choice) == ["C9"]


def test_a_pattern_is_upper_cased_and_refused_when_too_small() -> None:
    assert check_pattern(" welcome-## ", 1) == "WELCOME-##"
    assert check_pattern("#?", 2) == "#?"  # 230 codes: enough for 2
    with pytest.raises(InvalidInput, match="too few for 3"):
        check_pattern("#?", 3)


def test_an_expiry_is_a_date_through_its_day_or_a_time_with_an_offset() -> None:
    assert parse_expiry("2027-01-31") == datetime(2027, 2, 1, tzinfo=UTC)
    assert parse_expiry("2027-01-31T10:00:00+02:00") == datetime(2027, 1, 31, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="needs an offset"):
        parse_expiry("2027-01-31T10:00:00")


def test_an_import_keeps_line_numbers() -> None:
    good, bad = parse_codes("code\nA-1\n\nb-2,2027-01-01\nA-1", NOW)
    assert [(c.line, c.code) for c in good] == [(2, "A-1"), (4, "B-2")]
    assert [(r.line, r.message) for r in bad] == [(5, "code: A-1 is already on line 2")]
