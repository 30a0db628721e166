"""Members' free-form attributes: the merge rule and typed access (pure functions)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from domain.members.attributes import as_date, as_number, as_text, lookup, merge_attributes

keys = st.text(alphabet="abcdef", min_size=1, max_size=3)
values = st.none() | st.integers() | st.text(max_size=5) | st.booleans()
documents = st.dictionaries(keys, values.filter(lambda v: v is not None))


@given(current=documents, patch=st.dictionaries(keys, values))
def test_a_merge_sets_given_keys_removes_nulled_ones_and_keeps_the_rest(
    current: dict[str, Any], patch: dict[str, Any]
) -> None:
    merged = merge_attributes(current, patch)
    for key, value in patch.items():
        assert merged.get(key) == value  # None: removed, so .get gives None
        assert (key in merged) == (value is not None)
    for key, value in current.items():
        if key not in patch:
            assert merged[key] == value


def test_lookup_follows_dotted_paths_and_absent_steps_are_none() -> None:
    attributes = {"address": {"city": "Istanbul"}, "tags": ["a"], "n": 0}
    assert lookup(attributes, "address.city") == "Istanbul"
    assert lookup(attributes, "address.zip") is None
    assert lookup(attributes, "tags.first") is None
    assert lookup(attributes, "n") == 0


def test_typed_access() -> None:
    assert as_number(3) == Decimal(3)
    assert as_number(" 12.50 ") == Decimal("12.50")
    assert as_number(True) is None
    assert as_number("Infinity") is None
    assert as_number("twelve") is None
    assert as_text("F") == "F"
    assert as_text(1) is None
    assert as_date("1990-04-01") == date(1990, 4, 1)
    assert as_date("1990-04-01T10:00:00+00:00") == date(1990, 4, 1)
    assert as_date("1990-13-01") is None
    assert as_date(19900401) is None
