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
client (``FailureAnswers``). FastAPI writes interactive docs at /docs (Swagger UI, from a CDN); /api
is a plain reference page made from the same schema.

Safety, besides binding to 127.0.0.1 (server.py): requests must name this
server in their Host header (a web page elsewhere cannot reach it by DNS
rebinding), state-changing requests from another origin are refused (a page
elsewhere cannot post a form at it), uploads are capped before and while they
are read, and no path from a request is used before store.py has checked it.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from monalisa import __version__
from monalisa.lab.jobs import Lab
from monalisa.lab.middleware import LOOPBACK_NAMES, FailureAnswers, HostGuard, register_error_handlers
from monalisa.lab.routes import STATIC, event_routes, file_routes, image_routes, page_routes, recipe_routes, run_routes
from monalisa.lab.schemas import LabJSON


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
    app.add_middleware(HostGuard, allowed_hosts=allowed_hosts)
    app.add_middleware(FailureAnswers, root=lab.root)  # added last: outermost, so it also answers for HostGuard
    register_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in (page_routes, image_routes, recipe_routes, run_routes, event_routes, file_routes):
        app.include_router(router)
    return app
