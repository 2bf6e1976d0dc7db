"""The lab's routes, by area (the page, images, recipes, runs, events, run files): each translates one
request into one call on ``Lab`` (jobs.py) and declares the model of its answer (schemas.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Depends, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from monalisa.lab import forms, store
from monalisa.lab.api_page import reference_page
from monalisa.lab.jobs import MAX_RENDER_WIDTH, THUMBNAIL_SIDE, Lab
from monalisa.lab.schemas import (
    CheckRequest,
    ErrorBody,
    ImageInfo,
    Images,
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
from monalisa.lab.store import run_file, url_path

STATIC = Path(__file__).parent / "static"
KEEPALIVE_SECONDS = 15.0  # an event-stream comment this often keeps proxies and browsers from timing out
MAX_LISTENER_BACKLOG = 2000  # events waiting for a slow page; beyond it progress reports are dropped


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
    return HTMLResponse(reference_page(request.app.openapi()))


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


# -- errors no handler took ------------------------------------------------------------
