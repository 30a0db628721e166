"""What the demo keeps in its data directory: secrets readable by their owner only from the first
byte, and a seed that was interrupted named as such (the demo itself: test_demo.py)."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import demo
from api.cli_errors import CommandError
from api.demo import ReplayClock, seed_demo
from api.runtime import Services
from domain.settings import local_secret_key


@pytest.fixture
def no_chmod(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A usual umask, and no chmod after the fact: a file is private only if it was created so
    (between its creation and a chmod, other users could read it)."""
    monkeypatch.setattr(os, "chmod", lambda *_, **__: None)
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("no_chmod")
def test_the_demo_secret_key_and_credentials_are_created_private(tmp_path: Path) -> None:
    key = local_secret_key(tmp_path / "var")
    assert (tmp_path / "var" / "secret_key").read_text() == key
    assert mode(tmp_path / "var" / "secret_key") == 0o600
    assert local_secret_key(tmp_path / "var") == key  # kept

    credentials = tmp_path / "var" / "demo-credentials.json"
    credentials.write_text("{}")
    demo._keep(credentials, {"apiKey": "lk_secret"})
    assert mode(credentials) == 0o600  # an existing file too
    assert credentials.read_text() == '{\n  "apiKey": "lk_secret"\n}'


async def test_an_interrupted_seed_is_named_with_what_to_do(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a seed stopped after it created the program, before it wrote the credentials (Ctrl-C)
    monkeypatch.setattr(demo, "PROGRAM_KEY", f"demo-{uuid.uuid4().hex[:8]}")  # the suite's database is shared
    await services.programs.create_program(demo.PROGRAM_KEY, "Demo Coffee Club", "B2C")

    # when the demo starts again, then it says the demo is incomplete and how to start over
    with pytest.raises(CommandError) as incomplete:
        await seed_demo(services, tmp_path, ReplayClock())
    assert (incomplete.value.code, str(incomplete.value)) == (
        "DEMO_INCOMPLETE",
        f"the demo in {tmp_path} is incomplete (its seeding was interrupted, or demo-credentials.json "
        f"was deleted): delete {tmp_path} and run the demo again",
    )
