"""Code patterns: `WELCOME-####-????` draws a digit for each `#` and a letter for each `?`.

Pure: no I/O. Letters come from an alphabet without I, L and O (read as 1 and 0 off a
receipt); every other character of a pattern is kept as written. Codes are upper case
and compared as such: a member typing `welcome-1234-abcd` means `WELCOME-1234-ABCD`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from domain.errors import InvalidInput

DIGITS = "0123456789"
#: Unambiguous letters: no I, L or O
LETTERS = "ABCDEFGHJKMNPQRSTUVWXYZ"
MAX_CODE = 64
#: The characters a code may hold (imported codes included), placeholders aside
CODE = re.compile(r"[A-Z0-9][A-Z0-9_-]{0,63}")
PATTERN = re.compile(r"[A-Z0-9_#?-]{1,64}")
#: A pattern must offer at least this many codes per code asked for, so that random draws
#: rarely collide and the codes cannot be guessed from each other.
HEADROOM = 100
MAX_GENERATE = 100_000


def normalize(code: str) -> str:
    """The stored form of what a member or a till typed."""
    return code.strip().upper()


def capacity(pattern: str) -> int:
    """How many distinct codes the pattern can make."""
    digits: int = len(DIGITS) ** pattern.count("#")
    letters: int = len(LETTERS) ** pattern.count("?")
    return digits * letters


def check_pattern(pattern: str, count: int) -> str:
    """The pattern in upper case; BAD_USER_INPUT naming `pattern` or `count` otherwise."""
    if not 1 <= count <= MAX_GENERATE:
        raise InvalidInput(f"count: must be between 1 and {MAX_GENERATE}, got {count}")
    upper = pattern.strip().upper()
    if not PATTERN.fullmatch(upper) or upper[0] in "_-":
        raise InvalidInput(
            f"pattern: {pattern[:70]!r} must be 1 to {MAX_CODE} of A-Z 0-9 _ - and the placeholders "
            "# (a digit) and ? (a letter), not starting with _ or -"
        )
    if "#" not in upper and "?" not in upper:
        raise InvalidInput("pattern: needs at least one placeholder, # (a digit) or ? (a letter)")
    if capacity(upper) < count * HEADROOM:
        raise InvalidInput(
            f"pattern: {upper!r} makes {capacity(upper)} codes, too few for {count} "
            f"(at least {HEADROOM} per code asked for); add # or ?"
        )
    return upper


def draw(pattern: str, choice: Callable[[str], str] = secrets.choice) -> str:
    """One code of the (checked) pattern."""
    return "".join(choice(DIGITS) if c == "#" else choice(LETTERS) if c == "?" else c for c in pattern)


def draw_distinct(
    pattern: str, count: int, taken: set[str], choice: Callable[[str], str] = secrets.choice
) -> list[str]:
    """`count` codes of the pattern, distinct from each other and from `taken` (which grows)."""
    codes: list[str] = []
    while len(codes) < count:
        code = draw(pattern, choice)
        if code not in taken:
            taken.add(code)
            codes.append(code)
    return codes
