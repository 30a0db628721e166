"""Referral codes: what a member hands out so that a new member can sign up with it. Pure.

A code is 10 characters of an unambiguous 30-letter alphabet (digits 2-9 and the letters
without I, L, O and U, which read as 1, 0 and V), drawn from `secrets`: nothing about it follows
from the member's externalId or id, so codes cannot be guessed or enumerated from member data.
30^10 (about 6e14) codes make a clash on insert vanishingly rare (about 1 in 60 million at 10
million members); the unique index `(program_id, referral_code)` still guarantees uniqueness per
program. Codes are compared in their normal form: upper case, without spaces or dashes, so
"k7qm-r2xp-9h" matches "K7QMR2XP9H".
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 10


def new_referral_code() -> str:
    """A fresh random code (the members table's default: every new member gets one)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def normal_code(text: str) -> str | None:
    """The code `text` names, normalised; None when it cannot be a code at all."""
    code = "".join(text.split()).replace("-", "").upper()
    if len(code) != LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code
