"""Users, roles and tokens: who may do what, and for which mines.

Roles (a user has one):
- viewer: the wall screen, read only.
- dispatcher: + acknowledge, shelve, comment, out of service, calibration, evacuation and
  report steps, rescue tasks, wider cut.
- mine_leader: + restore power, close incidents.
- organiser: drills (plan, arm, abort, finish, reveal, report), + viewer.
- regulator: read only, + the regulators' API (history, records, statistics, journal).
- city: read across the mines of its city (viewer + the regulators' read API).
- admin: everything, including users and the simulator.
Jurisdiction: a user's ``mines`` lists the mine ids they may see (``*`` = all); a regulator or
city user of another city gets 403 from this mine's service.

Passwords are hashed with Argon2 (pwdlib); tokens are HS256 JWTs (PyJWT) signed with a secret
from the settings or, by default, a random one kept in the data directory (0600).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from pwdlib import PasswordHash

ROLES = ("viewer", "dispatcher", "mine_leader", "organiser", "regulator", "city", "admin")

# Permission → roles holding it (admin holds every permission).
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "operate": frozenset({"dispatcher", "mine_leader", "admin"}),
    "restore": frozenset({"mine_leader", "admin"}),
    "drill": frozenset({"organiser", "admin"}),
    "records": frozenset({"regulator", "city", "mine_leader", "admin"}),
    "simulate": frozenset({"organiser", "admin"}),
    "users": frozenset({"admin"}),
}
TOKEN_TTL_S = 12 * 3600.0  # one shift and a half
ALGORITHM = "HS256"
_hasher = PasswordHash.recommended()


@dataclass
class User:
    name: str
    role: str
    password_hash: str
    mines: list[str]
    created_at: float
    disabled: bool = False

    def may(self, permission: str) -> bool:
        return not self.disabled and (self.role == "admin"
                                      or self.role in PERMISSIONS[permission])

    def sees(self, mine_id: str) -> bool:
        return "*" in self.mines or mine_id in self.mines


class AuthError(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise AuthError("密码至少 8 位 / a password needs at least 8 characters")
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _hasher.verify(password, password_hash)
    except Exception:  # a malformed hash is a failed login, not a crash
        return False


def new_user(name: str, role: str, password: str, mines: list[str] | None = None) -> User:
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if not name or len(name) > 64:
        raise AuthError("a user name has 1 to 64 characters")
    return User(name, role, hash_password(password), mines or ["*"], time.time())


async def ensure_admin(store: Any, password: str | None, who: str) -> bool:
    """The first start creates ``admin`` (``password``, else a one-time password printed
    once, prefixed by ``who``); a given password is kept in force on later starts. Returns
    whether the user was created."""
    admin = await store.user("admin")
    if admin is None:
        pw = password or secrets.token_urlsafe(12)
        await store.save_user(new_user("admin", "admin", pw))
        if password is None:
            print(f"{who}: admin one-time password: {pw}  (user admin; change it, or "
                  "set MINEWATCH_ADMIN_PASSWORD)", flush=True)
        return True
    if password is not None and not verify_password(password, admin.password_hash):
        admin.password_hash = hash_password(password)
        await store.save_user(admin)
    return False


def load_secret(explicit: str | None, data_dir: Path) -> str:
    """The signing secret: the setting, else one generated once per data directory."""
    if explicit:
        return explicit
    path = data_dir / "jwt.secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


def issue_token(user: User, secret: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    return jwt.encode({"sub": user.name, "role": user.role, "mines": user.mines,
                       "iat": int(now), "exp": int(now + TOKEN_TTL_S)}, secret,
                      algorithm=ALGORITHM)


def token_claims(token: str, secret: str) -> dict:
    """The claims of a valid, unexpired token; AuthError otherwise."""
    try:
        return jwt.decode(token, secret, algorithms=[ALGORITHM],
                          options={"require": ["sub", "exp"]})
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc


def token_subject(token: str, secret: str) -> str:
    return str(token_claims(token, secret)["sub"])


def user_from_claims(claims: dict) -> User:
    """The user as the (signed) token describes them: used while the store is unreachable,
    so screens and alarm handling keep working through a database outage."""
    return User(str(claims["sub"]), str(claims.get("role", "viewer")), "",
                list(claims.get("mines") or []), float(claims.get("iat", 0)))
