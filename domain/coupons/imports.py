"""Reading an imported list of codes: one code per line, optionally `,expiresAt`.

Pure: no I/O. One bad line never sinks the others: each is reported with its line
number and why, and the good ones are stored (`CouponService.import_codes`). The first
line may be the header `code` or `code,expiresAt`. An expiry is an ISO date (the code is
valid through that day, UTC) or an ISO date-time with its offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from domain.coupons.patterns import CODE, MAX_CODE, normalize
from domain.errors import InvalidInput

MAX_LINES = 100_000
MAX_TEXT = 8 * 1024 * 1024


@dataclass(frozen=True)
class ImportedCode:
    line: int
    code: str
    expires_at: datetime | None


@dataclass(frozen=True)
class RejectedLine:
    line: int
    message: str


def parse_codes(text: str, now: datetime) -> tuple[list[ImportedCode], list[RejectedLine]]:
    """The good lines and the rejected ones (blank lines are skipped, duplicates rejected)."""
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"csv: larger than {MAX_TEXT} characters")
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise InvalidInput(f"csv: at most {MAX_LINES} lines, got {len(lines)}")
    good: list[ImportedCode] = []
    bad: list[RejectedLine] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or (number == 1 and line.replace(" ", "").lower() in ("code", "code,expiresat")):
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) > 2:
            bad.append(RejectedLine(number, "expected code or code,expiresAt"))
            continue
        code = normalize(cells[0])
        if not CODE.fullmatch(code):
            bad.append(
                RejectedLine(number, f"code: {cells[0][:70]!r} must be 1 to {MAX_CODE} of A-Z 0-9 _ -")
            )
            continue
        if code in seen:
            bad.append(RejectedLine(number, f"code: {code} is already on line {seen[code]}"))
            continue
        expires_at: datetime | None = None
        if len(cells) == 2 and cells[1]:
            try:
                expires_at = parse_expiry(cells[1])
            except ValueError as error:
                bad.append(RejectedLine(number, f"expiresAt: {error}"))
                continue
            if expires_at <= now:
                bad.append(RejectedLine(number, f"expiresAt: {cells[1]} is already past"))
                continue
        seen[code] = number
        good.append(ImportedCode(number, code, expires_at))
    return good, bad


def parse_expiry(text: str) -> datetime:
    """An ISO date (valid through that day, UTC: expires at the next midnight) or date-time with offset."""
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text[:40]!r} is not an ISO date (YYYY-MM-DD)") from None
        return datetime.combine(day + timedelta(days=1), time(), UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not an ISO date or date-time") from None
    if at.tzinfo is None:
        raise ValueError(f"{text[:40]!r} needs an offset (e.g. Z or +02:00)")
    return at.astimezone(UTC)
