"""The live lab: `monalisa serve`, a page in the browser that drives the real engines.

    jobs.py    Lab: runs created, queued, trained through the runner (runner.py), watched live (no web here)
    store.py   the runs directory and uploaded images on disk, and the checks on ids and uploads
    forms.py   the page's recipe form into a Recipe, each mistake tied to its field
    app.py     the HTTP layer: the JSON API under /api/, run files under /runs/, the page
    server.py  serve(): bind, print the address, run uvicorn, pause the runs on the way out
    static/    the page (HTML, CSS and JavaScript; no build step)
"""

from monalisa.recipes.recipe import DEFAULT_PRESET  # noqa: F401  (the form starts where `monalisa train` does)

# The form's starting size: small, so the first run on a laptop shows an image emerging within seconds.
DEFAULT_SIZE = "128"
SIZES = ("64", "128", "256", "full")
