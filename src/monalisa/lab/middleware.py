"""What stands between a request and the routes: the Host and origin guard, the upload cap, and the
translation of every failure into a one-line ``{error, field}`` answer with its status.
"""

from __future__ import annotations

import errno
import json
import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from monalisa.errors import UserError, one_line
from monalisa.lab import store
from monalisa.lab.schemas import UNKNOWN_FIELD, LabJSON
from monalisa.lab.store import LabError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")

log = logging.getLogger(__name__)  # a failure's traceback goes here, never to the client


# -- errors as {error, field} --------------------------------------------------------------


def error_answer(status: int, message: str, field: str | None = None, headers: dict | None = None) -> LabJSON:
    return LabJSON({"error": message, "field": field}, status_code=status, headers=headers)


def register_error_handlers(app: FastAPI) -> None:
    """Every refusal in the lab's shape (schemas.ErrorBody), never FastAPI's {"detail": ...}."""

    @app.exception_handler(LabError)
    async def lab_error(request: Request, exc: LabError):
        return error_answer(exc.status, str(exc), exc.field)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        # A UserError raised over a full disk or a refused write (files.write_failure) is the server's
        # trouble, not the request's: its line already says what to do.
        cause = os_cause(exc)
        status = 507 if cause is not None and cause.errno in DISK_FULL else \
            500 if cause is not None and cause.errno in NO_PERMISSION else 400
        return error_answer(status, str(exc), getattr(exc, "field", None))  # limits.LimitError names its field

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # Starlette's own refusals (no such route, wrong method).
        where = one_line(request.url.path)
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"nothing at {request.method} {where}; the API's routes are listed at /api"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "other methods")
            message = f"{request.method} is not allowed on {where}; it allows {allowed}"
        else:
            message = one_line(str(exc.detail))
        return error_answer(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = where[0] if where else None
        if first.get("type") == "json_invalid":  # its loc is the byte offset, no field
            message, field = "the request body is not valid JSON", None
        elif first.get("type") == UNKNOWN_FIELD:  # schemas.LabRequest: the line names the fields it takes
            message, field = first["ctx"]["message"], first["ctx"]["field"]
        elif request.url.path == "/api/images" and field == "file":  # a part without a file name is a plain string
            message = "send the image as the multipart field 'file', with a file name"
        else:
            message = one_line(f"{'.'.join(where) or 'request'}: {first.get('msg', 'invalid').lower()}")
        return error_answer(400, message, field)


class TooLarge(Exception):
    pass


class HostGuard:
    """ASGI middleware: the Host check, the cross-origin check, and the upload byte cap while reading."""

    def __init__(self, app, allowed_hosts: tuple[str, ...]):
        self.app = app
        self.allowed_hosts = None if "*" in allowed_hosts else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and hostname(host) not in self.allowed_hosts:
            return await refuse(send, 403, f"host {host!r} is not this lab; open it by its own address")
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin and urlsplit(origin).netloc != host:
            return await refuse(send, 403, f"cross-origin request from {origin} refused")
        if scope["method"] == "POST" and scope["path"] == "/api/images":
            limit = store.MAX_UPLOAD_BYTES + 2**20  # the file plus the multipart envelope
            if int(headers.get("content-length") or 0) > limit:
                return await refuse(send, 413, too_large())
            received = 0

            async def counted():
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge()
                return message

            started = False

            async def tracked_send(message):
                nonlocal started
                if received > limit:
                    # FastAPI turns any failure while it reads a form (TooLarge among them) into its own
                    # 400 "error parsing the body": the answer is the cap's, whatever the app says.
                    if message["type"] == "http.response.start" and not started:
                        started = True
                        await refuse(send, 413, too_large())
                    return
                started = True
                await send(message)

            try:
                return await self.app(scope, counted, tracked_send)
            except TooLarge:
                if not started:
                    return await refuse(send, 413, too_large())
                raise
        return await self.app(scope, receive, send)


def too_large() -> str:
    return f"the upload is larger than {store.MAX_UPLOAD_BYTES // 2**20} MB; shrink or recompress it"


# A Host header: a name or address, or a bracketed IPv6 address, then at most a port. Nothing else may
# follow: '127.0.0.1:80@evil.com' or '[::1]evil' is no loopback name, whatever a lax split would make of it.
_HOST = re.compile(r"(\[[0-9a-f:.]*\]|[^:\[\]@/\\]*)(?::[0-9]*)?")


def hostname(host: str) -> str:
    """The name in a Host header, lower-cased without its port; '' for a header that is not one."""
    match = _HOST.fullmatch(host.lower())
    return match.group(1) if match else ""
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # EFBIG: a file past the filesystem's or RLIMIT_FSIZE's limit
NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


class FailureAnswers:
    """ASGI middleware, outermost: an exception no handler took becomes a JSON answer with a one-line error.

    Not ``exception_handler(Exception)``: Starlette answers with that and then re-raises, so the server
    prints the traceback again (and a test client raises). Here the traceback is logged once, on the
    server; the client gets a line that says what happened, never the exception's text.
    """

    def __init__(self, app, root: Path):
        self.app = app
        self.root = root

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if started:
                raise  # the answer is under way: nothing can replace it
            status, message = failure_answer(exc, self.root)
            request = f"{scope['method']} {one_line(scope['path'])}"
            if message == INTERNAL_ERROR:
                log.error("%s failed", request, exc_info=exc)
            else:
                log.warning("%s failed: %s", request, message)
            await refuse(send, status, message)


INTERNAL_ERROR = "an internal error happened in the lab server; its log has the details"


def failure_answer(exc: Exception, root: Path) -> tuple[int, str]:
    """An unexpected exception as (HTTP status, one line for the client)."""
    cause = os_cause(exc)
    if cause is not None and cause.errno in DISK_FULL:
        return 507, (f"the disk that holds the runs folder {str(root)!r} is full ({cause.strerror}); "
                     "free some space, then try again")
    if cause is not None and cause.errno in NO_PERMISSION:
        where = f" {cause.filename!r}" if cause.filename else ""
        return 500, (f"the lab server was refused access to{where} ({cause.strerror}); give the user running "
                     f"`monalisa serve` read and write access to the runs folder {str(root)!r}, or choose "
                     "another --runs")
    return 500, INTERNAL_ERROR


def os_cause(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: itself, or one it was raised from or while handling."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


async def refuse(send, status: int, message: str) -> None:
    """Answer at the ASGI level, before any route: a one-line {error, field} with ``status``."""
    body = json.dumps({"error": message, "field": "file" if status == 413 else None}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
