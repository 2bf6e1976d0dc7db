"""The lab's HTTP layer: the JSON API under /api/, run files under /runs/, the page at /.

Every route translates a request into one call on ``Lab`` (jobs.py) and its
answer into JSON; errors are ``{"error": "<one line>", "field": <form field or
null>}`` with a 4xx status, the same messages the CLI prints. So are the
server's own failures: a full disk is a 507, anything unexpected a 500 whose
traceback goes to the server's log, never to the client (``_Errors``). FastAPI writes
the API's schema at /openapi.json and interactive docs at /docs (Swagger UI,
from a CDN); /api is a plain reference page made from the same schema.

Safety, besides binding to 127.0.0.1 (server.py): requests must name this
server in their Host header (a web page elsewhere cannot reach it by DNS
rebinding), state-changing requests from another origin are refused (a page
elsewhere cannot post a form at it), uploads are capped before and while they
are read, and no path from a request is used before store.py has checked it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import html
import json
import logging
import re
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from fastapi import Body, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StrictInt
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..status import table as status_table
from ..errors import UserError
from ..recipes import ORDERS, PRESETS, Recipe
from ..registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES
from . import DEFAULT_PRESET, DEFAULT_SIZE, SIZES, forms
from .jobs import Lab
from . import store
from ..files import json_safe, png_bytes
from ..record import RunDirectory
from .store import LabError, one_line, run_file, run_path, url_path

STATIC = Path(__file__).parent / "static"
THUMBNAIL_SIDE = 160  # px, the gallery's tiles at 2x for sharp screens
KEEPALIVE_SECONDS = 15.0  # an event-stream comment this often keeps proxies and browsers from timing out
MAX_LISTENER_BACKLOG = 2000  # events waiting for a slow page; beyond it progress reports are dropped
NEURON_CACHE = 32  # neuron grids kept, keyed by run, layer and checkpoint
# A render download's widest: 4096 px of the original 4x300 network is ~4.5 TFLOP for a square image,
# a minute or so on one CPU core; wider belongs to `monalisa render`, which has the whole machine.
MAX_RENDER_WIDTH = 4096
MAX_RENDER_PIXELS = 25_000_000  # and a tall image's height with it: 4096 px of the Mona Lisa is 24 megapixels


class RunRequest(BaseModel):
    image: str = Field(description="a built-in image name, 'upload:<sha256>' from POST /api/images, or "
                                   "'run:<run id>' (that run's exact training image; size is then ignored)")
    size: str | None = Field(DEFAULT_SIZE, description="'full', a longest side in pixels ('128'), or 'WxH'")
    preset: str | None = Field(DEFAULT_PRESET, description="the recipe's base")
    recipe_text: str | None = Field(None, description="TOML (key = value lines) or a JSON object: the fields "
                                                      "that differ from the preset, or the whole recipe")
    recipe: dict | None = Field(None, description="recipe fields as JSON, applied before recipe_text")


class CheckRequest(BaseModel):
    preset: str | None = DEFAULT_PRESET
    recipe_text: str | None = None
    recipe: dict | None = None


class ResumeRequest(BaseModel):
    # Strict: "5", 5.0 and true are refused, not quietly read as 5 or 1.
    epochs: StrictInt | None = Field(None, description="extend the run to this many epochs in total")


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(lab: Lab, manage: bool = True, allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES) -> FastAPI:
    """The web app over ``lab``; with ``manage`` it starts the lab with the app and closes it after.

    ``allowed_hosts``: the names a request's Host header may give ("*": any, for a lab shared on a network).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage:
            lab.start()
        try:
            yield
        finally:
            if manage:
                await run_in_threadpool(lab.close)

    app = FastAPI(title="monalisa lab", version=__version__, lifespan=lifespan,
                  description="Train coordinate networks on one image and watch them learn. "
                              "The page at / uses exactly this API.")
    app.add_middleware(_Guard, allowed_hosts=allowed_hosts)
    app.add_middleware(_Errors, root=lab.root)  # added last: outermost, so it also answers for _Guard
    neuron_cache: OrderedDict[tuple, tuple[dict, bytes]] = OrderedDict()
    thumbnails: dict[str, bytes] = {}

    @app.exception_handler(LabError)
    async def lab_error(request: Request, exc: LabError):
        return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        # A UserError raised over a full disk or a refused write (files.write_failure) is the server's
        # trouble, not the request's: its line already says what to do.
        cause = _os_cause(exc)
        status = 507 if cause is not None and cause.errno in DISK_FULL else \
            500 if cause is not None and cause.errno in NO_PERMISSION else 400
        return JSONResponse({"error": str(exc), "field": None}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # Starlette's own refusals (no such route, wrong method) in the lab's shape, not {"detail": ...}.
        where = one_line(request.url.path)
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"nothing at {request.method} {where}; the API's routes are listed at /api"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "other methods")
            message = f"{request.method} is not allowed on {where}; it allows {allowed}"
        else:
            message = one_line(str(exc.detail))
        return JSONResponse({"error": message, "field": None}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = where[0] if where else None
        if first.get("type") == "json_invalid":  # its loc is the byte offset, no field
            message, field = "the request body is not valid JSON", None
        elif request.url.path == "/api/images" and field == "file":  # a part without a file name is a plain string
            message = "send the image as the multipart field 'file', with a file name"
        else:
            message = one_line(f"{'.'.join(where) or 'request'}: {first.get('msg', 'invalid').lower()}")
        return JSONResponse({"error": message, "field": field}, status_code=400)

    # -- the page --------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- images ----------------------------------------------------------------------

    @app.get("/api/images", summary="The built-in gallery and the uploaded images")
    def images():
        return lab.images()

    @app.post("/api/images", status_code=201, summary="Upload an image (multipart field 'file')")
    async def upload(file: UploadFile = File(...)):
        data = await file.read(store.MAX_UPLOAD_BYTES + 1)
        return await run_in_threadpool(lab.uploads.add, data, file.filename)

    @app.get("/api/images/{image_id}/thumbnail.png", summary="A small PNG of an image")
    def thumbnail(image_id: str):
        if image_id not in thumbnails:
            from ..images import resize

            pixels = lab.image_pixels(image_id)
            scale = THUMBNAIL_SIDE / max(pixels.shape[:2])
            small = resize(pixels, scale=scale) if scale < 1 else pixels
            thumbnails[image_id] = png_bytes((small * 255).round().astype(np.uint8))
        return Response(thumbnails[image_id], media_type="image/png",
                        headers={"Cache-Control": "max-age=86400"})  # ids name fixed content

    # -- recipes ---------------------------------------------------------------------

    @app.get("/api/options", summary="Presets, component names and sizes for the recipe form")
    def options():
        return json_safe({
            "presets": {name: recipe.to_dict() for name, recipe in PRESETS.items()},
            "default_preset": DEFAULT_PRESET,
            "default_size": DEFAULT_SIZE,
            "sizes": list(SIZES),
            "choices": {"activation": list(ACTIVATIONS.names()), "encoding": list(ENCODINGS.names()),
                        "optimizer": list(OPTIMIZERS.names()), "output": list(OUTPUTS.names()),
                        "init": list(INITS.names()), "schedule": list(SCHEDULES.names()), "order": list(ORDERS)},
            "fields": list(Recipe().to_dict()),
            "statuses": status_table(),
        })

    @app.post("/api/recipes/check", summary="Check a recipe; its canonical form, or the error and its field")
    def check(body: CheckRequest):
        recipe = forms.build_recipe(body.preset, body.recipe_text, body.recipe)
        return json_safe(forms.describe_recipe(recipe))

    # -- runs ------------------------------------------------------------------------

    @app.get("/api/runs", summary="Every run under --runs, newest first")
    def runs():
        return json_safe({"runs": lab.runs()})

    @app.post("/api/runs", status_code=201, summary="Create a run and queue it")
    def create_run(body: RunRequest):
        return json_safe({"run": lab.create_run(body.image, body.size, body.preset, body.recipe_text, body.recipe)})

    @app.get("/api/runs/{run_id:path}/frame.png", summary="The newest reconstruction (live preview or last frame)")
    def frame(run_id: str):
        latest = lab.frame(run_id)
        if isinstance(latest, bytes):
            return Response(latest, media_type="image/png", headers={"Cache-Control": "no-store"})
        return FileResponse(latest, media_type="image/png", headers={"Cache-Control": "no-store"})

    def neuron_grid(run_id: str, layer: int) -> tuple[dict, bytes]:
        from ..neurons import run_neurons

        path = run_path(lab.root, run_id)
        checkpoint = path / "checkpoint.pt"
        key = (run_id, layer, checkpoint.stat().st_mtime_ns if checkpoint.exists() else None)
        if key not in neuron_cache:
            grid = run_neurons(path, layer)
            meta = {field.name: getattr(grid, field.name) for field in dataclasses.fields(grid)
                    if field.name != "image"} | {"summary": grid.summary}
            neuron_cache[key] = (meta, png_bytes(grid.image))
            while len(neuron_cache) > NEURON_CACHE:
                neuron_cache.popitem(last=False)
        return neuron_cache[key]

    @app.get("/api/runs/{run_id:path}/neurons.png", summary="The neuron grid of one hidden layer, as a PNG")
    def neurons_png(run_id: str, layer: int = Query(1, description="1..depth; 0 is the encoding")):
        return Response(neuron_grid(run_id, layer)[1], media_type="image/png")

    @app.get("/api/runs/{run_id:path}/neurons", summary="What each unit of a hidden layer computes: layout and PNG")
    def neurons(run_id: str, layer: int = Query(1, description="1..depth; 0 is the encoding")):
        meta, _ = neuron_grid(run_id, layer)
        image = f"/api/runs/{url_path(run_id)}/neurons.png?layer={layer}&epoch={meta['epoch']}"
        return json_safe({**meta, "image": image})

    @app.get("/api/runs/{run_id:path}/render.png",
             summary=f"The run's latest checkpoint rendered at a chosen width (at most {MAX_RENDER_WIDTH} px)")
    def render_png(run_id: str, width: int = Query(1024, description=f"output width in px, 1..{MAX_RENDER_WIDTH}; "
                                                                      "the height keeps the image's aspect ratio")):
        from ..rendering import render_run

        if not 1 <= width <= MAX_RENDER_WIDTH:
            raise LabError(f"width must be 1 to {MAX_RENDER_WIDTH} px, got {width}; use `monalisa render` for "
                           "larger images", field="width")
        run = RunDirectory(run_path(lab.root, run_id))  # not .open(): a reader must not tidy a run a worker writes
        info = run.info()
        height = max(1, round(width * info["height"] / info["width"]))
        if width * height > MAX_RENDER_PIXELS:
            raise LabError(f"{width}x{height} is more than {MAX_RENDER_PIXELS // 10**6} megapixels; choose a smaller "
                           "width, or use `monalisa render`", field="width")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{run.path.name}-render-{width}x{height}.png")  # a header is ASCII
        return Response(png_bytes(render_run(run, width, height)), media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})

    @app.post("/api/runs/{run_id:path}/pause", summary="Pause a queued or running run (it resumes from its last epoch)")
    def pause(run_id: str):
        return json_safe({"run": lab.pause(run_id)})

    @app.post("/api/runs/{run_id:path}/resume", summary="Queue a paused, stopped or interrupted run again; "
                                                       "with epochs, extend a run")
    def resume(run_id: str, body: ResumeRequest | None = Body(None)):
        return json_safe({"run": lab.resume(run_id, body.epochs if body else None)})

    @app.post("/api/runs/{run_id:path}/stop", summary="Stop a run and write its ending (final image, GIF, MP4)")
    def stop(run_id: str):
        return json_safe({"run": lab.stop(run_id)})

    @app.get("/api/runs/{run_id:path}", summary="One run: its summary and every epoch's metrics")
    def run(run_id: str):
        return json_safe({"run": lab.summary(run_id), "metrics": lab.metrics(run_id)})

    @app.get("/api/events", summary="Server-sent events: run changes, progress, frames, epochs")
    async def events(request: Request):
        loop = asyncio.get_running_loop()
        backlog: asyncio.Queue = asyncio.Queue()

        def offer(event: dict) -> None:
            if backlog.qsize() < MAX_LISTENER_BACKLOG or event["type"] != "progress":
                backlog.put_nowait(event)

        def listener(event: dict) -> None:  # called on the lab's thread
            loop.call_soon_threadsafe(offer, event)

        lab.subscribe(listener)

        async def stream():
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(backlog.get(), KEEPALIVE_SECONDS)
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield ": keep-alive\n\n"
                        continue
                    yield f"data: {json.dumps(json_safe(event))}\n\n"
            finally:
                lab.unsubscribe(listener)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api", include_in_schema=False)
    def api_reference():
        # /docs (Swagger UI) loads its script from a CDN; this page needs nothing but the server.
        return HTMLResponse(_api_reference(app.openapi()))

    # -- run files -------------------------------------------------------------------

    @app.get("/runs/{path:path}", summary="A file of a run directory: /runs/<run id>/<file>")
    def files(path: str):
        file = run_file(lab.root, path)
        return FileResponse(file, headers={"Cache-Control": "no-cache"})

    return app


def _api_reference(schema: dict) -> str:
    """The API as one self-contained HTML page: every route, its summary, parameters and body fields."""
    def fields(operation: dict) -> str:
        names = [f"{p['name']} ({p['in']})" for p in operation.get("parameters", [])]
        for content in operation.get("requestBody", {}).get("content", {}).values():  # JSON or multipart
            body = content.get("schema", {})
            for ref in [body.get("$ref", "")] + [option.get("$ref", "") for option in body.get("anyOf", [])]:
                model = schema.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[-1], {})
                names += [f"{name} (body)" for name in model.get("properties", {})]
        return ", ".join(html.escape(n) for n in names)

    rows = "".join(
        f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(operation.get('summary', ''))}</td><td>{fields(operation)}</td></tr>"
        for path, item in schema["paths"].items() for method, operation in item.items())
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(schema['info']['title'])} API</title>"
            "<style>body{font:15px system-ui;margin:2em;max-width:70em}td{padding:.3em .8em;vertical-align:top;"
            "border-bottom:1px solid #ddd}</style>"
            f"<h1>{html.escape(schema['info']['title'])} API</h1><p>{html.escape(schema['info']['description'])} "
            "Errors are <code>{\"error\": ..., \"field\": ...}</code> with a 4xx status (507: the disk is full; "
            "500: the server failed, its log says why). "
            "<a href='/openapi.json'>openapi.json</a> · <a href='/docs'>interactive docs</a> (needs the internet)</p>"
            f"<table><tr><th>method</th><th>path</th><th>what</th><th>inputs</th></tr>{rows}</table>")


class _TooLarge(Exception):
    pass


class _Guard:
    """ASGI middleware: the Host check, the cross-origin check, and the upload byte cap while reading."""

    def __init__(self, app, allowed_hosts: tuple[str, ...]):
        self.app = app
        self.allowed_hosts = None if "*" in allowed_hosts else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _hostname(host) not in self.allowed_hosts:
            return await _refuse(send, 403, f"host {host!r} is not this lab; open it by its own address")
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin and urlsplit(origin).netloc != host:
            return await _refuse(send, 403, f"cross-origin request from {origin} refused")
        if scope["method"] == "POST" and scope["path"] == "/api/images":
            limit = store.MAX_UPLOAD_BYTES + 2**20  # the file plus the multipart envelope
            if int(headers.get("content-length") or 0) > limit:
                return await _refuse(send, 413, _too_large())
            received = 0

            async def counted():
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge()
                return message

            started = False

            async def tracked_send(message):
                nonlocal started
                started = True
                await send(message)

            try:
                return await self.app(scope, counted, tracked_send)
            except _TooLarge:
                if not started:
                    return await _refuse(send, 413, _too_large())
                raise
        return await self.app(scope, receive, send)


def _too_large() -> str:
    return f"the upload is larger than {store.MAX_UPLOAD_BYTES // 2**20} MB; shrink or recompress it"


def _hostname(host: str) -> str:
    host = host.lower()
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


# -- errors no handler took ------------------------------------------------------------

log = logging.getLogger(__name__)
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # EFBIG: a file past the filesystem's or RLIMIT_FSIZE's limit
NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


class _Errors:
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
            status, message = _failure(exc, self.root)
            request = f"{scope['method']} {one_line(scope['path'])}"
            if message == INTERNAL_ERROR:
                log.error("%s failed", request, exc_info=exc)
            else:
                log.warning("%s failed: %s", request, message)
            await _refuse(send, status, message)


INTERNAL_ERROR = "an internal error happened in the lab server; its log has the details"


def _failure(exc: Exception, root: Path) -> tuple[int, str]:
    """An unexpected exception as (HTTP status, one line for the client)."""
    cause = _os_cause(exc)
    if cause is not None and cause.errno in DISK_FULL:
        return 507, (f"the disk that holds the runs folder {str(root)!r} is full ({cause.strerror}); "
                     "free some space, then try again")
    if cause is not None and cause.errno in NO_PERMISSION:
        where = f" {cause.filename!r}" if cause.filename else ""
        return 500, (f"the lab server was refused access to{where} ({cause.strerror}); give the user running "
                     f"`monalisa serve` read and write access to the runs folder {str(root)!r}, or choose "
                     "another --runs")
    return 500, INTERNAL_ERROR


def _os_cause(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: itself, or one it was raised from or while handling."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "field": "file" if status == 413 else None}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
