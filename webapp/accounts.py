"""Marketers' accounts (roles, passwords) and the storefront's API keys (scopes, rate), in the app's state file.

Passwords are hashed with Argon2id (argon2-cffi), a memory-hard KDF. API keys are
256 random bits, shown once when made: only a SHA-256 of the secret part is kept
(a slow KDF adds nothing to a random key and would cost every API call its time),
and the key's public prefix finds its row.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("viewer", "editor", "admin")  # each can do what the one before it can
SCOPES = ("recommendations:read", "customers:read", "events:write")
NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MIN_PASSWORD_LENGTH = 12
KEY_PREFIX = "sgr"
DEFAULT_RATE_PER_MINUTE = 1200

_hasher = PasswordHasher()
# Verified when a name is unknown, so that a failed sign-in takes as long whether or not the account exists.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A bad name, role, scope or password; the message says which."""


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    session_version: int

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    scopes: tuple[str, ...]
    rate_per_minute: int


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise AccountError(f"a {what} is 1 to 64 letters, digits or . _ @ -")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"the role must be one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password


def new_password() -> str:
    return secrets.token_urlsafe(18)


# ------------------------------------------------------------------ users

def add_user(state, name: str, role: str, password: str) -> User:
    check_name(name), check_role(role), check_password(password)
    try:
        user_id = state.write("INSERT INTO users (name, role, password_hash) VALUES (?, ?, ?)", (name, role, _hasher.hash(password)))
    except sqlite3.IntegrityError:
        raise AccountError(f"there is already a user {name}") from None
    return User(user_id, name, role, 1)


def users(state) -> list[dict]:
    return [dict(row) for row in state.query("SELECT id, name, role, created_at FROM users ORDER BY name")]


def user_count(state) -> int:
    return state.query("SELECT count(*) AS n FROM users")[0]["n"]


def find_user(state, user_id: int) -> User | None:
    rows = state.query("SELECT id, name, role, session_version FROM users WHERE id = ?", (user_id,))
    return User(**dict(rows[0])) if rows else None


def remove_user(state, name: str) -> None:
    if not state.query("SELECT 1 FROM users WHERE name = ?", (name,)):
        raise AccountError(f"there is no user {name}")
    admins = state.query("SELECT name FROM users WHERE role = 'admin'")
    if [row["name"] for row in admins] == [name]:
        raise AccountError(f"{name} is the last admin: make another admin first")
    state.write("DELETE FROM users WHERE name = ?", (name,))


def set_password(state, name: str, password: str) -> None:
    """A new password; the user's open sessions end (their session version moves on)."""
    check_password(password)
    if not state.write_count("UPDATE users SET password_hash = ?, session_version = session_version + 1 WHERE name = ?",
                             (_hasher.hash(password), name)):
        raise AccountError(f"there is no user {name}")


def authenticate(state, name: str, password: str) -> User | None:
    """The user if ``password`` is theirs; None otherwise, in about the same time either way."""
    rows = state.query("SELECT id, name, role, session_version, password_hash FROM users WHERE name = ?", (name,))
    stored = rows[0]["password_hash"] if rows else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if not rows:
        return None
    row = dict(rows[0])
    if _hasher.check_needs_rehash(stored):
        state.write("UPDATE users SET password_hash = ? WHERE id = ?", (_hasher.hash(password), row["id"]))
    return User(row["id"], row["name"], row["role"], row["session_version"])


# ------------------------------------------------------------------ API keys

def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes) -> tuple[str, ...]:
    chosen = tuple(sorted({scope.strip() for scope in scopes if scope.strip()}))
    unknown = [scope for scope in chosen if scope not in SCOPES]
    if not chosen or unknown:
        raise AccountError(f"scopes are one or more of {', '.join(SCOPES)}" + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    return chosen


def create_key(state, name: str, scopes, rate_per_minute: int = DEFAULT_RATE_PER_MINUTE) -> str:
    """A new key (the only time its whole text exists): ``sgr_<prefix>_<secret>``."""
    check_name(name, "key name")
    chosen = check_scopes(scopes)
    if not 1 <= rate_per_minute <= 1_000_000:
        raise AccountError("a key's rate is 1 to 1,000,000 requests per minute")
    prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    try:
        state.write("INSERT INTO api_keys (name, prefix, secret_hash, scopes, rate_per_minute) VALUES (?, ?, ?, ?, ?)",
                    (name, prefix, _digest(secret), ",".join(chosen), rate_per_minute))
    except sqlite3.IntegrityError:
        raise AccountError(f"there is already a key named {name}") from None
    return f"{KEY_PREFIX}_{prefix}_{secret}"


def keys(state) -> list[dict]:
    return [dict(row) for row in state.query(
        "SELECT name, prefix, scopes, rate_per_minute, created_at, revoked_at FROM api_keys ORDER BY name")]


def revoke_key(state, name: str) -> None:
    if not state.write_count("UPDATE api_keys SET revoked_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') "
                             "WHERE name = ? AND revoked_at IS NULL", (name,)):
        raise AccountError(f"there is no active key named {name}")


def key_for(state, presented: str) -> ApiKey | None:
    """The active key ``presented`` is, or None."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    rows = state.query("SELECT id, name, secret_hash, scopes, rate_per_minute FROM api_keys WHERE prefix = ? AND revoked_at IS NULL",
                       (parts[1],))
    if not rows or not hmac.compare_digest(rows[0]["secret_hash"], _digest(parts[2])):
        return None
    row = rows[0]
    return ApiKey(row["id"], row["name"], tuple(row["scopes"].split(",")), row["rate_per_minute"])
