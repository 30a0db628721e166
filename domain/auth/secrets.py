"""Password hashes, TOTP codes and HMAC-signed tokens. Pure, no I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's minimum argon2id parameters (m=19 MiB, t=2, p=1): ~20 ms a check here.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_DUMMY_HASH = _HASHER.hash("not a real password")
TOTP_STEP_S = 30
MIN_PASSWORD = 12


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the account exists (a missing hash checks a dummy)."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, email: str, issuer: str) -> str:
    return str(pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer))


def matching_timecode(secret: str, code: str, unix_time: float, window: int = 1) -> int | None:
    """The time step (t-1, t or t+1) whose code equals `code`, or None."""
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(unix_time // TOTP_STEP_S)
    for step in range(now_step - window, now_step + window + 1):
        if hmac.compare_digest(str(totp.generate_otp(step)), code):
            return step
    return None


def code_at(secret: str, unix_time: float) -> str:
    return str(pyotp.TOTP(secret).generate_otp(int(unix_time // TOTP_STEP_S)))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(payload: dict[str, Any], secret: str) -> str:
    body = _b64(orjson.dumps(payload))
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unsign(token: str, secret: str) -> dict[str, Any] | None:
    """The payload of a token this secret signed, or None."""
    body, _, mac = token.partition(".")
    if not body or not mac:
        return None
    expected = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, mac):
        return None
    try:
        payload = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None
