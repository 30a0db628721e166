"""`make screenshots`: the admin console's pages as PNGs in docs/console/, from the demo.

Seeds the demo into a fresh temporary data directory (`loyalty demo`: SQLite and an embedded Redis,
nothing from the network), serves it on a free local port, signs in as the demo's admin with a
TOTP code made from its secret, and photographs each page in Debian's headless Chromium (the one
the tests use). docs/console.md embeds the files; run it again after changing the console.

Usage: .venv/bin/python tools/screenshots.py [--out docs/console]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from playwright.async_api import Page, ViewportSize, expect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `domain` and `tests` when run as a script

from domain.auth import secrets as crypto  # noqa: E402
from tests.support.browser import chromium  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

#: Seeding the demo's history takes minutes on a busy machine.
SEED_WAIT_S = 1800
WIDE = ViewportSize(width=1280, height=900)
PHONE = ViewportSize(width=390, height=844)
#: (file name, hash route, what must be on the page before the picture is taken)
PAGES = [
    ("segments", "#/segments", "#segments tbody tr"),
    ("segment", "#/segments/{segment}", "#analytics"),
    ("editor", "#/segments/new", "#preview-size"),
    ("members", "#/members", "main table"),
    ("member", "#/members/{member}", "#timeline tbody tr"),
    ("review", "#/review", "main .card"),
    ("leaderboards", "#/leaderboards", "#board-top tbody tr"),
    ("experiments", "#/experiments", "main .card"),
    ("live", "#/live", "#feed"),
]


@contextlib.asynccontextmanager
async def demo_server(data_dir: Path) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """`loyalty demo` in a subprocess until the block ends: its URL and its credentials."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "api.cli", "--data-dir", str(data_dir), "demo", "--host", "127.0.0.1"]
    log = (data_dir / "screenshots-server.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *command, "--port", str(port), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log, cwd=ROOT
    )
    log.close()  # the server has its own descriptor
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as http:
            for _ in range(SEED_WAIT_S * 10):
                if process.returncode is not None:
                    tail = (data_dir / "screenshots-server.log").read_text()[-3000:]
                    raise SystemExit(f"the demo exited with {process.returncode}:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(f"the demo did not become ready within {SEED_WAIT_S} s")
        yield url, orjson.loads((data_dir / "demo-credentials.json").read_bytes())
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def sign_in(page: Page, url: str, admin: dict[str, str]) -> None:
    await page.goto(f"{url}/admin")
    form = page.get_by_role("form", name="Sign in")
    await form.get_by_label("E-mail").fill(admin["email"])
    await form.get_by_label("Password").fill(admin["password"])
    await form.get_by_label("Authenticator code (TOTP)").fill(
        crypto.code_at(admin["totpSecret"], time.time())
    )
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=30000)


async def examples(url: str, token: str) -> dict[str, str]:
    """A segment with members and a member with history, to show their pages."""
    query = "{ segments { key size } members(first: 50) { edges { node { externalId pointsBalance } } } }"
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        body = (
            await http.post("/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"})
        ).json()
    segments = [s for s in body["data"]["segments"] if not s["key"].startswith("tier-")]
    segment = max(segments, key=lambda s: s["size"])["key"]
    members = body["data"]["members"]["edges"]
    member = max(members, key=lambda e: e["node"]["pointsBalance"])["node"]["externalId"]
    return {"segment": segment, "member": member}


async def shoot(out: Path, demo_dir: Path | None) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="loyalty-screenshots-", ignore_cleanup_errors=True) as fresh:
        return await shoot_demo(out, demo_dir or Path(fresh))


async def shoot_demo(out: Path, data_dir: Path) -> list[Path]:
    """Each page of PAGES, then a member's page on a phone: the files written."""
    written: list[Path] = []
    async with demo_server(data_dir) as (url, credentials), chromium() as browser:
        context = await browser.new_context(viewport=WIDE, device_scale_factor=1)
        page = await context.new_page()
        await sign_in(page, url, credentials["admin"])
        token = await page.evaluate("sessionStorage.getItem('loyalty.console.token')")
        names = await examples(url, token)
        for name, route, ready in PAGES:
            await page.goto(f"{url}/admin{route.format(**names)}")
            if name == "editor":
                await page.get_by_label("Rule").fill('count(purchase, 30d) >= 2 and lifecycle = "ACTIVE"')
            await page.locator(ready).first.wait_for(timeout=30000)
            await page.wait_for_load_state("networkidle")
            path = out / f"{name}.png"
            await page.screenshot(path=path, full_page=True)
            written.append(path)
        await page.set_viewport_size(PHONE)
        await page.goto(f"{url}/admin#/members/{names['member']}")
        await page.locator("#timeline").wait_for()
        await page.wait_for_load_state("networkidle")
        path = out / "member-phone.png"
        await page.screenshot(path=path)
        written.append(path)
        await context.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    parser.add_argument(
        "--demo-dir",
        type=Path,
        help="a demo data directory to seed once and reuse (default: a fresh temporary one)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.demo_dir:
        args.demo_dir.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(args.out, args.demo_dir)):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
