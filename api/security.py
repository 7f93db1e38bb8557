"""Request-size limit and security headers, shared by the mine's app and the city app.

Same-origin only (no CORS middleware: browsers refuse other origins' scripts); no framing.
A body over the limit is refused before it is read (by its Content-Length; a chunked body
without one is bounded by the server's own limits).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; "
                               "script-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; "
                               "frame-ancestors 'none'",
}


def add_guard(app: FastAPI, max_request_bytes: int) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Size limit on request bodies, and security headers on every answer."""
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > max_request_bytes):
            return JSONResponse(
                {"detail": f"请求过大 / request body over {max_request_bytes} bytes"},
                status_code=413)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response
