"""Running the `loyalty` command as a user does, on a database of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent / "loyalty"


def cli_environment(tmp_path: Path) -> dict[str, str]:
    """The command's environment: a fresh SQLite database in `tmp_path`, nothing from the caller's LOYALTY_*."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    return base | {
        "LOYALTY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "LOYALTY_DATA_DIR": str(tmp_path / "var"),
        "LOYALTY_SECRET_KEY": "cli-test-secret-" + "s" * 32,
    }


def loyalty(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


def ok(env: dict[str, str], *args: str) -> Any:
    """The JSON the command prints; it must succeed."""
    result = loyalty(env, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
