"""Shared by every route: the time-range query parameters (one parser, one set of bounds) and
the documented error answers (one body, ``{"detail": …}``)."""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel

from minewatch.readings import parse_time

DAY = 86400
T_MIN, T_MAX = 0.0, 253_402_300_799.0  # 1970-01-01 … 9999-12-31T23:59:59Z


def parse_param(name: str, text: str | None) -> float | None:
    """ISO 8601 or epoch seconds → epoch seconds; a clear 422 naming the parameter."""
    if text is None:
        return None
    try:
        t = parse_time(text.strip())
    except (ValueError, OverflowError) as exc:
        raise HTTPException(422, f"{name}: not an ISO 8601 time or epoch seconds: {text!r}") \
            from exc
    if not math.isfinite(t):
        raise HTTPException(422, f"{name}: not a finite time")
    if not T_MIN <= t <= T_MAX:
        raise HTTPException(422, f"{name}: out of range (1970-01-01 … 9999-12-31)")
    return t


def period(t_from: str | None, t_to: str | None, max_span: float, default_span: float,
           what: str = "", *, to_pad: float = 0.0) -> tuple[float, float]:
    """A bounded [from, to): ``to`` defaults to now (+ ``to_pad``), ``from`` to ``to`` less
    ``default_span``; no request may span more than ``max_span`` seconds."""
    hi = parse_param("to", t_to)
    lo = parse_param("from", t_from)
    hi = time.time() + to_pad if hi is None else hi
    lo = max(T_MIN, hi - default_span) if lo is None else lo
    if lo >= hi:
        raise HTTPException(422, "from must be earlier than to")
    if hi - lo > max_span:
        raise HTTPException(422, f"time range too large{what} (max {max_span / DAY:g} days)")
    return lo, hi


def optional_period(t_from: str | None, t_to: str | None) -> tuple[float | None, float | None]:
    """Open-ended bounds (either may be absent), checked for order."""
    lo, hi = parse_param("from", t_from), parse_param("to", t_to)
    if lo is not None and hi is not None and lo >= hi:
        raise HTTPException(422, "from must be earlier than to")
    return lo, hi


# --- error answers -------------------------------------------------------------------------------
class Error(BaseModel):
    """Every refusal: ``detail`` is a message, or (422 from FastAPI's own validation) the list
    of field errors."""

    detail: str | list[dict[str, Any]]


ERROR_TEXT = {
    400: "请求体无法解析 / the body could not be parsed (not UTF-8)",
    401: "未登录或登录已失效 / no valid token",
    403: "无此权限或不在管辖范围 / the role may not do this, or outside its jurisdiction",
    404: "不存在 / unknown id (the detail names it)",
    409: "与当前状态冲突 / refused in the current state (the detail says why)",
    413: "请求过大 / request body over the size limit",
    422: "参数无效 / invalid input (the detail names the parameter)",
    429: "登录失败次数过多 / too many failed logins, try again later",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: these refusals, with their body, in the OpenAPI document."""
    return {code: {"model": Error, "description": ERROR_TEXT[code]} for code in codes}


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Complete an OpenAPI document with the refusals any route can give, so the schema tells
    clients (and the fuzz test) every status they may get: 401/403 where a token is needed,
    404 where the path names something, 400 (unparsable) and 413 (too large) where a body is
    taken, 422 where input is validated (FastAPI's default declares only its own list form).
    Idempotent; refusals particular to a route (409, 429, …) are declared on the route with
    ``errors()``."""
    spec.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "Error", Error.model_json_schema())
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for ops in spec.get("paths", {}).values():
        for op in ops.values():
            params = op.get("parameters", [])
            codes = [401, 403] if op.get("security") else []
            codes += [404] if any(p.get("in") == "path" for p in params) else []
            codes += [400, 413] if "requestBody" in op else []
            codes += [422] if params or "requestBody" in op else []
            responses = op.setdefault("responses", {})
            for code in codes:  # replaces FastAPI's default 422 (its list form only)
                responses[str(code)] = {"description": ERROR_TEXT[code], "content": error}
    return spec
