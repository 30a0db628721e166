"""The parse and validation caches: a query text sent again is parsed and validated once.

Both are keyed by the query's text (never by its parsed document: hashing an AST walks the
whole tree) and hold CACHED_DOCUMENTS entries each. A query longer than MAX_CACHED_QUERY_CHARS
skips both: such a query is a batch of literals (`recordEvents` with its events inline), new
every time, so caching it would only cost the lookup and hold megabytes of AST.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeGuard, TypeVar

from strawberry.extensions import ParserCache

CACHED_DOCUMENTS = 256
MAX_CACHED_QUERY_CHARS = 16 * 1024

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def cacheable(query: str | None) -> TypeGuard[str]:
    return query is not None and len(query) <= MAX_CACHED_QUERY_CHARS


class SmallQueryParserCache(ParserCache):
    """strawberry's ParserCache (shared by every request) for queries of MAX_CACHED_QUERY_CHARS at most."""

    def __init__(self) -> None:
        super().__init__(maxsize=CACHED_DOCUMENTS)

    def on_parse(self) -> Iterator[None]:
        if cacheable(self.execution_context.query):
            yield from super().on_parse()
        else:
            yield  # strawberry parses it


class Lru(Generic[K, V]):
    """The last `size` results of `compute`, by key; for one event loop's use (no locking)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, compute: Callable[[], V]) -> V:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = self._entries[key] = compute()
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value
