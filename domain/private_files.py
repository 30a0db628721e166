"""Files only their owner may read: the demo's secret key and credentials, member exports.

A file is created with mode 0600 (and an existing one set to it) before anything is written,
so other users never get a moment in which they could read it.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (its directory is created), readable and writable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(descriptor, 0o600)  # a file that existed keeps its mode otherwise
        file.write(data)
