"""Authentication and authorisation for the REST API and the WebSockets.

OAuth2 password flow: ``POST /api/v1/auth/token`` (form fields ``username``, ``password``)
returns ``access_token`` (a JWT); every other route but ``/api/v1/health`` needs it as
``Authorization: Bearer …`` (WebSockets and links opened in a new tab: ``?token=…``). Each
route declares the permission it needs (minewatch/auth.py); a user outside the mine's
jurisdiction gets 403. Failed logins are rate-limited per client address.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from api.params import errors
from minewatch.auth import (
    ROLES,
    AuthError,
    User,
    issue_token,
    new_user,
    token_claims,
    user_from_claims,
    verify_password,
)

router = APIRouter(prefix="/api/v1", tags=["auth"])  # log in, who am I (mine and city apps)
users_router = APIRouter(prefix="/api/v1", tags=["auth"])  # user admin (the mine's service)
_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
LOGIN_FAILURES = 10  # per client address …
LOGIN_WINDOW_S = 60.0  # … within this window, then 429
USER_CACHE_S = 5.0
STORE_WAIT_S = 1.0  # a user lookup waits this long for the store, then trusts the token


class _Failures:
    def __init__(self) -> None:
        self.at: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, who: str, now: float) -> bool:
        q = self.at[who]
        while q and q[0] < now - LOGIN_WINDOW_S:
            q.popleft()
        return len(q) >= LOGIN_FAILURES

    def add(self, who: str, now: float) -> None:
        self.at[who].append(now)


_failures = _Failures()


@dataclass
class AuthContext:
    """What authentication needs from the app that hosts it (``app.state.auth``): a user
    store (``user``, ``users``, ``save_user``), the token signing secret, and for a mine's
    service the mine every user must have in their jurisdiction. The city app has no single
    mine (``mine_id`` None): it filters what it shows by each user's mines instead."""

    store: Any
    secret: str
    mine_id: str | None
    cache: dict[str, tuple[float, User | None]] = field(default_factory=dict)

    def check_jurisdiction(self, user: User) -> None:
        if self.mine_id is not None and not user.sees(self.mine_id):
            raise HTTPException(403, f"无权查看煤矿 {self.mine_id} / outside your jurisdiction")


async def _lookup(auth: AuthContext, claims: dict) -> User | None:
    """Users by name, cached a few seconds (a disabled user is out within that time). With
    the store unreachable (a database outage) the last known record, else the signed token's
    own claims, stand in: safety screens must not go dark with the database."""
    name = str(claims["sub"])
    cache = auth.cache
    hit = cache.get(name)
    now = time.monotonic()
    if hit is not None and now - hit[0] < USER_CACHE_S:
        return hit[1]
    try:
        user = await asyncio.wait_for(auth.store.user(name), STORE_WAIT_S)
    except Exception:
        return hit[1] if hit is not None else user_from_claims(claims)
    cache[name] = (now, user)
    return user


async def authenticate(app: Any, token: str | None) -> User:
    if not token:
        raise HTTPException(401, "需要登录 / not authenticated",
                            headers={"WWW-Authenticate": "Bearer"})
    auth: AuthContext = app.state.auth
    try:
        claims = token_claims(token, auth.secret)
    except AuthError as exc:
        raise HTTPException(401, "登录已失效，请重新登录 / invalid or expired token",
                            headers={"WWW-Authenticate": "Bearer"}) from exc
    user = await _lookup(auth, claims)
    if user is None or user.disabled:
        raise HTTPException(401, "用户不存在或已停用 / unknown or disabled user")
    auth.check_jurisdiction(user)
    return user


async def current_user(request: Request,
                       token: Annotated[str | None, Depends(_bearer)] = None) -> User:
    return await authenticate(request.app, token or request.query_params.get("token"))


def need(permission: str):
    """Route dependency: the authenticated user must hold ``permission``."""
    async def check(user: Annotated[User, Depends(current_user)]) -> User:
        if not user.may(permission):
            raise HTTPException(403, f"角色 {user.role} 无此权限 / role {user.role} may not "
                                     f"do this ({permission})")
        return user
    return check


def signed(user: User, name: str) -> str:
    """Who a safety command is recorded under: the login, and the name signed if different."""
    return user.name if not name or name == user.name else f"{name}（{user.name}）"


# Route dependencies by permission, for ``@router.get(..., dependencies=READ)``.
READ = [Depends(need("read"))]
OPERATE = [Depends(need("operate"))]
RESTORE = [Depends(need("restore"))]
DRILL = [Depends(need("drill"))]
SIMULATE = [Depends(need("simulate"))]
RECORDS = [Depends(need("records"))]


async def ws_user(ws: WebSocket) -> User | None:
    """WebSockets: the token in ``?token=``; closes with 4401/4403 when refused."""
    try:
        return await authenticate(ws.app, ws.query_params.get("token"))
    except HTTPException as exc:
        await ws.close(code=4401 if exc.status_code == 401 else 4403, reason="auth")
        return None


@router.post("/auth/token", summary="登录 / log in (OAuth2 password flow)",
             responses=errors(401, 403, 429))
async def token(request: Request,
                form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> dict[str, Any]:
    who = request.client.host if request.client else "?"
    now = time.time()
    if _failures.blocked(who, now):
        raise HTTPException(429, "登录失败次数过多，请稍后再试 / too many failed logins")
    auth: AuthContext = request.app.state.auth
    try:
        user = await asyncio.wait_for(auth.store.user(form.username), STORE_WAIT_S * 5)
    except Exception as exc:  # a database outage: logged-in users keep working on their token
        raise HTTPException(503, "用户库暂不可用，请稍后登录（已登录用户不受影响） / "
                                 "user store unavailable, try again later") from exc
    if user is None or user.disabled or not verify_password(form.password, user.password_hash):
        _failures.add(who, now)
        raise HTTPException(401, "用户名或密码错误 / wrong user name or password",
                            headers={"WWW-Authenticate": "Bearer"})
    auth.check_jurisdiction(user)
    return {"access_token": issue_token(user, auth.secret), "token_type": "bearer",
            "role": user.role, "user": user.name}


@router.get("/auth/me", summary="当前用户 / who am I")
async def me(user: Annotated[User, Depends(current_user)]) -> dict[str, Any]:
    return {"user": user.name, "role": user.role, "mines": user.mines}


class UserBody(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\s/]+$")
    role: str
    password: str = Field(min_length=8, max_length=200)
    mines: list[str] = Field(default_factory=lambda: ["*"], max_length=1000)


@users_router.get("/users", summary="用户列表 / users", dependencies=[Depends(need("users"))])
async def users(request: Request) -> list[dict[str, Any]]:
    return [{"name": u.name, "role": u.role, "mines": u.mines, "disabled": u.disabled}
            for u in await request.app.state.service.store.users()]


@users_router.post("/users", summary="新增用户 / add or replace a user")
async def add_user(request: Request, body: UserBody,
                   admin: Annotated[User, Depends(need("users"))]) -> dict[str, Any]:
    if body.role not in ROLES:
        raise HTTPException(422, f"unknown role {body.role!r}; one of {', '.join(ROLES)}")
    s = request.app.state.service
    user = new_user(body.name, body.role, body.password, body.mines)
    await s.store.save_user(user)
    request.app.state.auth.cache.pop(user.name, None)
    s._journal("user_saved", user.name, {"role": user.role, "mines": user.mines,
                                         "by": admin.name})
    return {"name": user.name, "role": user.role, "mines": user.mines}
