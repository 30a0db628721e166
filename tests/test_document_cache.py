"""The parse and validation caches (api/document_cache.py): keyed by the query's text, and skipped by
queries too large to be worth keeping (a batch of literals, new every time)."""

from __future__ import annotations

import uuid

import pytest

from api import introspection
from api.document_cache import CACHED_DOCUMENTS, MAX_CACHED_QUERY_CHARS, Lru, SmallQueryParserCache
from api.schema import build_schema


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> Lru[object, object]:
    """An empty validation cache for this test."""
    fresh: Lru[object, object] = Lru(CACHED_DOCUMENTS)
    monkeypatch.setattr(introspection, "_validations", fresh)
    return fresh


def parses() -> tuple[int, int]:
    """(hits, misses) of the shared parse cache so far."""
    info = SmallQueryParserCache().cached_parse_document.cache_info()  # type: ignore[attr-defined]  # an lru_cache
    return info.hits, info.misses


async def test_a_query_text_sent_again_is_parsed_and_validated_once(validations: Lru[object, object]) -> None:
    schema = build_schema()
    query = f"# {uuid.uuid4()}\n{{ __typename }}"
    hits, misses = parses()
    for _ in range(2):
        assert (await schema.execute(query)).data == {"__typename": "Query"}
    assert parses() == (hits + 1, misses + 1)
    assert len(validations) == 1


async def test_a_large_query_skips_both_caches_and_is_still_validated(
    validations: Lru[object, object],
) -> None:
    # given queries longer than the bound (a comment is enough: it costs no tokens)
    schema = build_schema()
    padding = f"# {uuid.uuid4()} " + "x" * MAX_CACHED_QUERY_CHARS + "\n"
    hits, misses = parses()

    # when each runs twice, then it is answered, and neither cache has seen it
    for _ in range(2):
        assert (await schema.execute(padding + "{ __typename }")).data == {"__typename": "Query"}
        invalid = await schema.execute(padding + "{ nope }")
        assert [e.message for e in invalid.errors or []] == ["Cannot query field 'nope' on type 'Query'."]
    assert parses() == (hits, misses)
    assert len(validations) == 0
