"""The lab's HTTP layer: the JSON API under /api/, run files under /runs/, the page at /.

Laid out by area: the request and answer models are in schemas.py, the work in ``Lab``
(jobs.py); here every route translates a request into one call on ``Lab`` and declares the
model of its answer, so /openapi.json documents every answer and FastAPI checks each one
against its model. JSON answers are written by schemas.json_text (a non-finite number, such
as a perfect fit's PSNR, is null), the event stream's events too. Routes are plain ``def``
where they block (files, torch), so FastAPI runs them in its threadpool, off the event loop.

Errors are ``{"error": "<one line>", "field": <form field or null>}`` (schemas.ErrorBody) with
a 4xx status, the same messages the CLI prints. So are the server's own failures: a full disk
is a 507, anything unexpected a 500 whose traceback goes to the server's log, never to the
client (``_Errors``). FastAPI writes interactive docs at /docs (Swagger UI, from a CDN); /api
is a plain reference page made from the same schema.

Safety, besides binding to 127.0.0.1 (server.py): requests must name this
server in their Host header (a web page elsewhere cannot reach it by DNS
rebinding), state-changing requests from another origin are refused (a page
elsewhere cannot post a form at it), uploads are capped before and while they
are read, and no path from a request is used before store.py has checked it.
"""

from __future__ import annotations

import asyncio
import errno
import html
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from monalisa import __version__
from monalisa.errors import UserError, one_line
from monalisa.lab import forms, store
from monalisa.lab.jobs import MAX_RENDER_WIDTH, THUMBNAIL_SIDE, Lab
from monalisa.lab.schemas import (
    UNKNOWN_FIELD,
    CheckRequest,
    ErrorBody,
    ImageInfo,
    Images,
    LabJSON,
    Network,
    Neurons,
    Options,
    RecipeCheck,
    ResumeRequest,
    RunAnswer,
    RunDetail,
    RunList,
    RunRequest,
    RunsCreated,
    json_text,
)
from monalisa.lab.store import LabError, run_file, url_path

STATIC = Path(__file__).parent / "static"
KEEPALIVE_SECONDS = 15.0  # an event-stream comment this often keeps proxies and browsers from timing out
MAX_LISTENER_BACKLOG = 2000  # events waiting for a slow page; beyond it progress reports are dropped
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

    app = FastAPI(title="monalisa lab", version=__version__, lifespan=lifespan, default_response_class=LabJSON,
                  description="Train coordinate networks on one image and watch them learn. "
                              "The page at / uses exactly this API.")
    app.state.lab = lab
    app.add_middleware(_Guard, allowed_hosts=allowed_hosts)
    app.add_middleware(_Errors, root=lab.root)  # added last: outermost, so it also answers for _Guard
    _register_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in (page_routes, image_routes, recipe_routes, run_routes, event_routes, file_routes):
        app.include_router(router)
    return app


async def _lab(request: Request) -> Lab:  # async: nothing to send to the threadpool
    return request.app.state.lab


LabDep = Annotated[Lab, Depends(_lab)]

# -- what the schema says of answers that are not JSON models, and of errors ---------------

ERRORS = {
    400: "the request is malformed or refused; field names the form field at fault",
    404: "no such run, image or file",
    409: "the run's status does not allow it now",
    413: "the upload is too large",
    507: "the disk that holds the runs folder is full",
}


def _errors(*statuses: int) -> dict:
    """OpenAPI answers for these error statuses, and for any other (a 403 from another host, a 500)."""
    answers = {status: {"model": ErrorBody, "description": ERRORS[status]} for status in statuses}
    return answers | {"default": {"model": ErrorBody, "description": "any other refusal or failure"}}


def _binary(media_type: str, what: str) -> dict:
    return {200: {"description": what, "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}}


def _png(data: bytes, cache: str | None = "no-store", **headers: str) -> Response:
    return Response(data, media_type="image/png", headers=({"Cache-Control": cache} if cache else {}) | headers)


# -- the page ------------------------------------------------------------------------

page_routes = APIRouter()


@page_routes.get("/", include_in_schema=False)
def index():
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@page_routes.get("/api", include_in_schema=False)
def api_reference(request: Request):
    # /docs (Swagger UI) loads its script from a CDN; this page needs nothing but the server.
    return HTMLResponse(_api_reference(request.app.openapi()))


# -- images --------------------------------------------------------------------------

image_routes = APIRouter(prefix="/api/images")


@image_routes.get("", response_model=Images, responses=_errors(),
                  summary="The built-in gallery and the uploaded images")
def list_images(lab: LabDep):
    return lab.images()


@image_routes.post("", status_code=201, response_model=ImageInfo, responses=_errors(400, 413, 507),
                   summary="Upload an image (multipart field 'file')")
async def upload(lab: LabDep, file: UploadFile = File(...)):
    data = await file.read(store.MAX_UPLOAD_BYTES + 1)
    return await run_in_threadpool(lab.uploads.add, data, file.filename)


@image_routes.get("/{image_id}/thumbnail.png", response_class=Response,
                  responses=_binary("image/png", f"a PNG at most {THUMBNAIL_SIDE} px a side") | _errors(404),
                  summary="A small PNG of an image")
def thumbnail(image_id: str, lab: LabDep):
    return _png(lab.thumbnail(image_id), cache="max-age=86400")  # ids name fixed content


# -- recipes -------------------------------------------------------------------------

recipe_routes = APIRouter(prefix="/api")


@recipe_routes.get("/options", response_model=Options, responses=_errors(),
                   summary="Presets, component names, sizes and run statuses for the recipe form")
def options():
    return forms.options()


@recipe_routes.post("/recipes/check", response_model=RecipeCheck, responses=_errors(400),
                    summary="Check a recipe; its canonical form, or the error and its field")
def check(body: CheckRequest):
    return forms.describe_recipe(forms.build_recipe(body.preset, body.recipe_text, body.recipe))


# -- runs ------------------------------------------------------------------------------

run_routes = APIRouter(prefix="/api/runs")  # a run's own routes before /{run_id:path}, which takes '<id>/pause' whole
Layer = Annotated[int, Query(description="1..depth; 0 is the encoding")]


@run_routes.get("", response_model=RunList, responses=_errors(), summary="Every run under --runs, newest first")
def list_runs(lab: LabDep):
    return {"runs": lab.runs()}


@run_routes.post("", status_code=201, response_model=RunsCreated, responses=_errors(400, 404, 409, 507),
                 summary="Create a run (or one per seed) and queue it")
def create_run(body: RunRequest, lab: LabDep):
    runs = lab.create_runs(body.image, body.size, body.preset, body.recipe_text, body.recipe, body.seeds)
    return {"run": runs[0], "runs": runs}


@run_routes.get("/{run_id:path}/frame.png", response_class=Response,
                responses=_binary("image/png", "a PNG of the training image's size") | _errors(404),
                summary="The newest reconstruction (live preview or last frame)")
def frame(run_id: str, lab: LabDep):
    latest = lab.frame(run_id)
    if isinstance(latest, bytes):
        return _png(latest)
    return FileResponse(latest, media_type="image/png", headers={"Cache-Control": "no-store"})


@run_routes.get("/{run_id:path}/neurons.png", response_class=Response,
                responses=_binary("image/png", "the grid of tiles") | _errors(400, 404),
                summary="The neuron grid of one hidden layer, as a PNG")
def neurons_png(run_id: str, lab: LabDep, layer: Layer = 1):
    return _png(lab.neuron_grid(run_id, layer)[1], cache=None)  # its URL names the epoch


@run_routes.get("/{run_id:path}/neurons", response_model=Neurons, responses=_errors(400, 404),
                summary="What each unit of a hidden layer computes: layout and PNG")
def neurons(run_id: str, lab: LabDep, layer: Layer = 1):
    meta, _ = lab.neuron_grid(run_id, layer)
    return {**meta, "image": f"/api/runs/{url_path(run_id)}/neurons.png?layer={layer}&epoch={meta['epoch']}"}


@run_routes.get("/{run_id:path}/network", response_model=Network, responses=_errors(400, 404),
                summary="The network view: each hidden layer's units (or an even sample) and its dynamics")
def network(run_id: str, lab: LabDep):
    from monalisa.views.network_view import network_view
    from monalisa.views.neurons import GUTTER

    view = network_view(store.run_path(lab.root, run_id))
    base = f"/api/runs/{url_path(run_id)}"
    for layer in view["layers"]:  # the URL names the epoch, so a browser never shows an old column
        layer["image"] = f"{base}/column.png?layer={layer['layer']}&epoch={view['epoch']}"
    return {**view, "gutter": GUTTER}


@run_routes.get("/{run_id:path}/column.png", response_class=Response,
                responses=_binary("image/png", "the thumbnails, one column") | _errors(400, 404),
                summary="The network view's column of one hidden layer, as a PNG")
def column_png(run_id: str, lab: LabDep, layer: Layer = 1):
    from monalisa.files import png_bytes
    from monalisa.views.network_view import layer_column

    return _png(png_bytes(layer_column(store.run_path(lab.root, run_id), layer)))


@run_routes.get("/{run_id:path}/unit.png", response_class=Response,
                responses=_binary("image/png", "one unit, 256 px on its longest side") | _errors(400, 404),
                summary="One unit of a hidden layer over the image, enlarged")
def unit_png(run_id: str, lab: LabDep, layer: Layer = 1,
             unit: Annotated[int, Query(description="0..units - 1")] = 0):
    from monalisa.files import png_bytes
    from monalisa.views.network_view import unit_picture

    return _png(png_bytes(unit_picture(store.run_path(lab.root, run_id), layer, unit)))


@run_routes.get("/{run_id:path}/render.png", response_class=Response,
                responses=_binary("image/png", "a PNG download") | _errors(400, 404),
                summary=f"The run's latest checkpoint rendered at a chosen width (at most {MAX_RENDER_WIDTH} px)")
def render_png(run_id: str, lab: LabDep,
               width: Annotated[int, Query(description=f"output width in px, 1..{MAX_RENDER_WIDTH}; the height "
                                                       "keeps the image's aspect ratio")] = 1024):
    name, data = lab.render(run_id, width)
    return _png(data, **{"Content-Disposition": f'attachment; filename="{name}"'})


@run_routes.post("/{run_id:path}/pause", response_model=RunAnswer, responses=_errors(404, 409),
                 summary="Pause a queued or running run (it resumes from its last epoch)")
def pause(run_id: str, lab: LabDep):
    return {"run": lab.pause(run_id)}


@run_routes.post("/{run_id:path}/resume", response_model=RunAnswer, responses=_errors(400, 404, 409),
                 summary="Queue a paused, stopped or interrupted run again; with epochs, extend a run")
def resume(run_id: str, lab: LabDep, body: ResumeRequest | None = Body(None)):
    return {"run": lab.resume(run_id, body.epochs if body else None)}


@run_routes.post("/{run_id:path}/stop", response_model=RunAnswer, responses=_errors(404, 409),
                 summary="Stop a run and write its ending (final image, GIF, MP4)")
def stop(run_id: str, lab: LabDep):
    return {"run": lab.stop(run_id)}


@run_routes.get("/{run_id:path}", response_model=RunDetail, responses=_errors(404),
                summary="One run: its summary and every epoch's metrics")
def run(run_id: str, lab: LabDep):
    return {"run": lab.summary(run_id), "metrics": lab.metrics(run_id)}


# -- the event stream --------------------------------------------------------------------

event_routes = APIRouter()
EVENTS = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description":
                "One JSON object per `data:` line, with a type: run {run: RunSummary} when a run changes; "
                "progress {id, epoch, fraction}; frame {id, epoch, fraction, version} when a new preview "
                "(frame.png) is ready; epoch {id, row: MetricsRow}. Non-finite numbers are null."}}


@event_routes.get("/api/events", response_class=StreamingResponse, responses=EVENTS | _errors(),
                  summary="Server-sent events: run changes, progress, frames, epochs")
async def event_stream(request: Request, lab: LabDep):
    return StreamingResponse(_events(request, lab), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _events(request: Request, lab: Lab):
    """The lab's events as server-sent events, until the page goes; a slow page loses progress reports only."""
    loop = asyncio.get_running_loop()
    backlog: asyncio.Queue = asyncio.Queue()

    def offer(event: dict) -> None:
        if backlog.qsize() < MAX_LISTENER_BACKLOG or event["type"] != "progress":
            backlog.put_nowait(event)

    def listener(event: dict) -> None:  # called on the lab's thread
        loop.call_soon_threadsafe(offer, event)

    lab.subscribe(listener)
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
            yield f"data: {json_text(event)}\n\n"
    finally:
        lab.unsubscribe(listener)


# -- run files -------------------------------------------------------------------------

file_routes = APIRouter()


@file_routes.get("/runs/{path:path}", response_class=FileResponse,
                 responses=_binary("application/octet-stream", "the file, its type from its name") | _errors(404),
                 summary="A file of a run directory: /runs/<run id>/<file>")
def run_directory_file(path: str, lab: LabDep):
    return FileResponse(run_file(lab.root, path), headers={"Cache-Control": "no-cache"})


# -- errors as {error, field} --------------------------------------------------------------


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> LabJSON:
    return LabJSON({"error": message, "field": field}, status_code=status, headers=headers)


def _register_error_handlers(app: FastAPI) -> None:
    """Every refusal in the lab's shape (schemas.ErrorBody), never FastAPI's {"detail": ...}."""

    @app.exception_handler(LabError)
    async def lab_error(request: Request, exc: LabError):
        return _error(exc.status, str(exc), exc.field)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        # A UserError raised over a full disk or a refused write (files.write_failure) is the server's
        # trouble, not the request's: its line already says what to do.
        cause = _os_cause(exc)
        status = 507 if cause is not None and cause.errno in DISK_FULL else \
            500 if cause is not None and cause.errno in NO_PERMISSION else 400
        return _error(status, str(exc), getattr(exc, "field", None))  # limits.LimitError names its field

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
        return _error(exc.status_code, message, headers=exc.headers)

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
        return _error(400, message, field)


# -- the reference page at /api ------------------------------------------------------------


def _api_reference(schema: dict) -> str:
    """The API as one self-contained HTML page: every route with its inputs and its answer, then every model."""
    models = schema.get("components", {}).get("schemas", {})

    def model(ref: str) -> tuple[str, dict]:
        name = ref.rsplit("/", 1)[-1]
        return name, models.get(name, {})

    def inputs(operation: dict) -> str:
        names = [f"{p['name']} ({p['in']})" for p in operation.get("parameters", [])]
        for content in operation.get("requestBody", {}).get("content", {}).values():  # JSON or multipart
            body = content.get("schema", {})
            for ref in [body.get("$ref", "")] + [option.get("$ref", "") for option in body.get("anyOf", [])]:
                names += [f"{name} (body)" for name in model(ref)[1].get("properties", {})]
        return ", ".join(html.escape(n) for n in names)

    def answer(operation: dict) -> str:
        success = {**operation["responses"].get("200", {}), **operation["responses"].get("201", {})}
        content = success.get("content", {})
        ref = content.get("application/json", {}).get("schema", {}).get("$ref")
        if ref is None:
            return html.escape(", ".join(content))
        name, fields = model(ref)
        listed = ", ".join(f"{key}: {_type(value)}" for key, value in fields.get("properties", {}).items())
        return f"<a href='#{html.escape(name)}'>{html.escape(name)}</a> {{{html.escape(listed)}}}"

    def model_row(name: str, fields: dict) -> str:
        items = "".join(f"<li><code>{html.escape(key)}</code>: {html.escape(_type(value))}"
                        f"{' — ' + html.escape(value['description']) if 'description' in value else ''}</li>"
                        for key, value in fields.get("properties", {}).items())
        return (f"<tr id='{html.escape(name)}'><td><code>{html.escape(name)}</code></td>"
                f"<td>{html.escape(fields.get('description', ''))}<ul>{items}</ul></td></tr>")

    routes = "".join(
        f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(operation.get('summary', ''))}</td><td>{inputs(operation)}</td>"
        f"<td>{answer(operation)}</td></tr>"
        for path, item in schema["paths"].items() for method, operation in item.items())
    title = html.escape(schema["info"]["title"])
    return (f"<!doctype html><meta charset='utf-8'><title>{title} API</title>"
            "<style>body{font:15px system-ui;margin:2em;max-width:80em}td{padding:.3em .8em;vertical-align:top;"
            "border-bottom:1px solid #ddd}ul{margin:.3em 0;padding-left:1.2em}</style>"
            f"<h1>{title} API</h1><p>{html.escape(schema['info']['description'])} "
            "Errors are <a href='#ErrorBody'><code>{\"error\": ..., \"field\": ...}</code></a> with a 4xx status "
            "(507: the disk is full; 500: the server failed, its log says why); numbers JSON cannot hold "
            "(an infinite PSNR) are null. "
            "<a href='/openapi.json'>openapi.json</a> · <a href='/docs'>interactive docs</a> (needs the internet)</p>"
            "<table><tr><th>method</th><th>path</th><th>what</th><th>inputs</th><th>answer</th></tr>"
            f"{routes}</table><h2>Models</h2><table>"
            f"{''.join(model_row(name, fields) for name, fields in sorted(models.items()))}</table>")


def _type(field: dict) -> str:
    """A JSON schema's type in a few characters: 'int | null', 'list[RunSummary]', 'dict[str, StatusRow]'."""
    if "$ref" in field:
        return field["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in field:
        return " | ".join(_type(option) for option in field["anyOf"])
    kind = field.get("type", "any")
    if kind == "array" and "prefixItems" in field:
        return f"[{', '.join(_type(item) for item in field['prefixItems'])}]"
    if kind == "array":
        return f"list[{_type(field.get('items', {}))}]"
    if kind == "object" and isinstance(field.get("additionalProperties"), dict):
        return f"dict[str, {_type(field['additionalProperties'])}]"
    return {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}.get(kind, kind)


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
