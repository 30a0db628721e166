"""Where the time goes: a summary of py-spy's raw (collapsed) stacks, by module and by function.

`py-spy record --format raw` writes one line per distinct stack, `frame;frame;...;leaf COUNT`, each
frame `function (path:line)`; with `--subprocesses` the outermost frame names the process. Idle
frames are left out by py-spy unless `--idle`, so the samples are where the processes ran.
Some waits still show up as samples: the uvicorn supervisor blocked on its workers' pipes, threads
waiting on a condition, and uvloop's loop in C (its epoll wait, seen as `Runner.run` with nothing
above it). They are counted as idle (`IDLE`) and left out; shares are of the remaining (busy)
samples: "self" counts a sample for its innermost frame only, "inclusive" for every distinct module
or function on its stack, "areas" for the stacks that pass through given frames. SQLAlchemy runs
its synchronous core in greenlets, whose stacks do not show the coroutine that awaits them: that
work appears under no request or loop (the "unattributed" area). Modules are this repository's files by path
(`domain/segments/engine.py`), third-party packages by name (`sqlalchemy`), the standard
library as `stdlib:NAME`.
Usage: .venv/bin/python bench/profile.py FILE [--top N]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>[^()]*?):\d+\)$")
_REPO_PACKAGES = ("api/", "domain/", "fraud/", "gamification/", "migrations/", "bench/")
IDLE = frozenset(
    {
        "Connection._recv (stdlib:multiprocessing)",
        "Runner.run (stdlib:asyncio)",
        "Condition.wait (stdlib:threading)",
        "Event.wait (stdlib:threading)",
    }
)
#: (area, frames it passes through, frames it must not pass through): substrings of "function (module)".
AREAS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("recordEvents", ("EventService.record_events",), ()),
    ("  segment engine", ("EventService.record_events", "SegmentEngine."), ()),
    (
        "    time-flip due times (horizon.earliest_change)",
        ("EventService.record_events", "earliest_change"),
        (),
    ),
    ("    loading facts (segments/facts.py)", ("EventService.record_events", "domain/segments/facts.py"), ()),
    ("  audit (fraud/)", ("EventService.record_events", "(fraud/"), ()),
    (
        "  the rest (validation, writes, ledger, ...)",
        ("EventService.record_events",),
        ("SegmentEngine.", "(fraud/"),
    ),
    ("HTTP and GraphQL outside the resolver", ("run_asgi",), ("EventService.record_events",)),
    ("background loops", ("domain/background.py",), ()),
    ("  time-flip scheduler", ("domain/segments/scheduler.py",), ()),
    ("  leaderboard feeder", ("leaderboards/feeder.py",), ()),
    ("  change relay", ("domain/live/relay.py",), ()),
    (
        "unattributed (SQLAlchemy greenlets, live bus, ...)",
        (),
        ("EventService.record_events", "run_asgi", "domain/background.py"),
    ),
    ("any frame: sqlalchemy", ("(sqlalchemy)",), ()),
    ("any frame: asyncpg", ("(asyncpg)",), ()),
    ("any frame: fractions", ("(stdlib:fractions)",), ()),
    ("any frame: dataclasses.replace", ("replace (stdlib:dataclasses)",), ()),
)


def module_of(path: str) -> str:
    """A short module name for a frame's file path."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for package in _REPO_PACKAGES:
        index = path.find("/" + package)
        if index >= 0 and "/lib/python" not in path:
            return path[index + 1 :]
    match = re.search(r"/lib/python3\.\d+/([^/]+)", path)
    if match:
        return "stdlib:" + match.group(1).removesuffix(".py")
    return path


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    """(frames as (module, function) outermost first, samples) for each stack of the file."""
    stacks: list[tuple[list[tuple[str, str]], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        text, _, count = line.rpartition(" ")
        if not text or not count.isdigit():
            continue
        frames = []
        for frame in text.split(";"):
            match = _FRAME.match(frame)
            if match:  # process and thread frames carry no file: left out
                module = module_of(match.group("path"))
                frames.append((module, f"{match.group('function')} ({module})"))
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    """Shares in % of all samples: modules by self and inclusive time, functions by inclusive time."""
    everything = parse(path)
    stacks = [(frames, count) for frames, count in everything if frames[-1][1] not in IDLE]
    total = sum(count for _, count in stacks) or 1
    idle = sum(count for _, count in everything) - total
    self_modules: Counter[str] = Counter()
    inclusive_modules: Counter[str] = Counter()
    inclusive_functions: Counter[str] = Counter()
    self_functions: Counter[str] = Counter()
    for frames, count in stacks:
        self_modules[frames[-1][0]] += count
        self_functions[frames[-1][1]] += count
        for module in {module for module, _ in frames}:
            inclusive_modules[module] += count
        for function in {function for _, function in frames}:
            inclusive_functions[function] += count

    def shares(counter: Counter[str]) -> list[tuple[float, str]]:
        return [(round(100 * n / total, 1), name) for name, n in counter.most_common(top)]

    areas: Counter[str] = Counter()
    for frames, count in stacks:
        names = [function for _, function in frames]
        for area, through, avoiding in AREAS:
            if all(any(part in name for name in names) for part in through) and not any(
                part in name for name in names for part in avoiding
            ):
                areas[area] += count
    return {
        "samples": total,
        "idle_samples": idle,
        "areas": [(round(100 * areas[area] / total, 1), area) for area, _, _ in AREAS],
        "modules": shares(self_modules),
        "modules_inclusive": shares(inclusive_modules),
        "functions_self": shares(self_functions),
        "functions_inclusive": shares(inclusive_functions),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    summary = summarize(args.file, args.top)
    sys.stdout.write(f"{summary['samples']} busy samples ({summary['idle_samples']} idle left out)\n")
    for title in ("areas", "modules", "modules_inclusive", "functions_self", "functions_inclusive"):
        sys.stdout.write(f"\n{title}\n")
        for share, name in summary[title]:
            sys.stdout.write(f"{share:6.1f}%  {name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
