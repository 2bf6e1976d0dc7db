"""The lab API's requests and answers as Pydantic models, so /openapi.json (and /api) documents every one.

The models describe the dicts ``Lab`` (jobs.py) returns; the routes in app.py declare them as
``response_model``, so FastAPI checks each answer against its model and writes it into the schema.

JSON has no infinity or NaN, and a perfect fit's PSNR is inf: ``json_text`` turns every non-finite
number into null, at any depth. It is the one serialiser of the API: ``LabJSON`` (the app's default
response class) renders every answer with it, and the event stream writes every event with it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, create_model, model_validator
from pydantic_core import PydanticCustomError

from monalisa.errors import unknown_name
from monalisa.files import json_safe
from monalisa.lab import DEFAULT_PRESET, DEFAULT_SIZE
from monalisa.recipes.recipe import Recipe


def json_text(value: Any) -> str:
    """``value`` as compact JSON, a non-finite number as null (JSON has neither inf nor NaN)."""
    return json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class LabJSON(JSONResponse):
    """Every JSON answer of the lab, written by ``json_text``."""

    def render(self, content: Any) -> bytes:
        return json_text(content).encode("utf-8")


# -- requests ------------------------------------------------------------------------

UNKNOWN_FIELD = "unknown_field"  # the error type of a request field no model declares (app.py's handler)


class LabRequest(BaseModel):
    """A request body. A field it does not declare is refused, not ignored: a misspelt 'seeds' would
    otherwise train one seed without a word."""

    model_config = ConfigDict(extra="forbid")  # the schema says so too: additionalProperties false

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        # Before pydantic's own extra="forbid" check, to say which fields the request takes.
        for key in data if isinstance(data, dict) else ():
            if key not in cls.model_fields:
                refusal = unknown_name("field", key, cls.model_fields, listing="this request takes")
                raise PydanticCustomError(UNKNOWN_FIELD, "{message}", {"message": str(refusal), "field": str(key)})
        return data


class RunRequest(LabRequest):
    image: str = Field(description="a built-in image name, 'upload:<sha256>' from POST /api/images, or "
                                   "'run:<run id>' (that run's exact training image; size is then ignored)")
    size: str | None = Field(DEFAULT_SIZE, description="'full', a longest side in pixels ('128'), or 'WxH'")
    preset: str | None = Field(DEFAULT_PRESET, description="the recipe's base")
    recipe_text: str | None = Field(None, description="TOML (key = value lines) or a JSON object: the fields "
                                                      "that differ from the preset, or the whole recipe")
    recipe: dict | None = Field(None, description="recipe fields as JSON, applied before recipe_text")
    seeds: StrictInt | list[StrictInt] | str | None = Field(
        None, description="train the recipe once per seed: a count N (the recipe's seed and the N - 1 after it), "
                          "a list of seeds, or either as text ('3', '0,1,2'); each seed is an ordinary run, and "
                          "the runs share a group. Null: one run with the recipe's own seed")


class CheckRequest(LabRequest):
    preset: str | None = DEFAULT_PRESET
    recipe_text: str | None = None
    recipe: dict | None = None


class ResumeRequest(LabRequest):
    # Strict: "5", 5.0 and true are refused, not quietly read as 5 or 1.
    epochs: StrictInt | None = Field(None, description="extend the run to this many epochs in total")


# -- answers -------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every refusal and failure: one line, and the form field it concerns."""

    error: str = Field(description="one line that says what is wrong and what to do")
    field: str | None = Field(description="the form or recipe field at fault ('size', 'arch', 'file', ...), or null")


# A recipe as data: the fields of recipes.Recipe with their types, read from the dataclass so the two
# cannot diverge (Recipe.to_dict's tuples are JSON arrays).
RecipeFields = create_model(
    "RecipeFields",
    __doc__="A whole recipe: every field of recipes.Recipe (see `monalisa train --help`).",
    **{field.name: (typing.get_type_hints(Recipe)[field.name], ...) for field in dataclasses.fields(Recipe)},
)


class ImageInfo(BaseModel):
    id: str = Field(description="what POST /api/runs takes as image")
    name: str
    width: int
    height: int
    thumbnail: str = Field(description="URL of a small PNG")


class Images(BaseModel):
    builtin: list[ImageInfo]
    uploads: list[ImageInfo] = Field(description="newest first")
    default: str = Field(description="the built-in image the form starts with")


class Choices(BaseModel):
    """The names each recipe component accepts."""

    activation: list[str]
    encoding: list[str]
    optimizer: list[str]
    output: list[str]
    init: list[str]
    schedule: list[str]
    order: list[str]


class StatusRow(BaseModel):
    actions: list[str] = Field(description="what a run in this status allows: pause, resume, stop")
    active: bool = Field(description="the run may still change without the user: the page keeps a panel open")
    busy: bool = Field(description="a process is on the run: its live progress is shown")


class Options(BaseModel):
    presets: dict[str, RecipeFields]
    default_preset: str
    default_size: str
    sizes: list[str]
    choices: Choices
    fields: list[str] = Field(description="the recipe's fields, in order")
    statuses: dict[str, StatusRow] = Field(description="every run status and what it allows (status.py)")


class RecipeCheck(BaseModel):
    recipe: RecipeFields
    toml: str = Field(description="the recipe as the form's text")
    describe: str = Field(description="one line, e.g. '4x300 leaky_relu sgd b1'")
    parameters: int


class RunFiles(BaseModel):
    """URLs of the run's files under /runs/, null until written."""

    target: str | None
    final: str | None
    gif: str | None
    mp4: str | None
    curves: str | None
    recipe: str | None


class Live(BaseModel):
    """What only the server knows of a run a worker trains."""

    epoch: int | None = Field(description="the epoch under way, null before the first report")
    fraction: float = Field(description="how much of it is done, 0..1")
    version: int | None = Field(description="the newest preview frame's number (frame.png?v=...), null before one")


class RunSummary(BaseModel):
    """A run as the runs view shows it (store.RunReader.summary, overlaid by Lab.summary)."""

    id: str = Field(description="the run directory under --runs, '/'-separated")
    image: str | None = Field(description="the training image's name")
    source: str = Field(description="what POST /api/runs takes as image to train on the same pixels")
    width: int | None
    height: int | None
    preset: str | None
    describe: str
    recipe: RecipeFields | None = Field(description="null when recipe.json cannot be read")
    status: str = Field(description="one of /api/options statuses")
    message: str | None = Field(description="why it stopped, failed or cannot be read")
    epoch: int = Field(description="epochs trained")
    epochs: int | None = Field(description="epochs the recipe asks for")
    psnr: float | None = Field(description="the last epoch's PSNR in dB; null before one, or when infinite")
    best_psnr: float | None
    mae: float | None
    created: str | None
    train_seconds: float
    layers: int = Field(description="hidden layers")
    files: RunFiles
    frame: str = Field(description="URL of the newest reconstruction (PNG)")
    live: Live | None
    actions: list[str] = Field(description="what the run allows now")
    writer_pid: int | None = Field(description="status elsewhere: the process that writes the run (a CLI train, "
                                               "another lab), when its lock file names it; else null")
    group: str | None = Field(description="runs created together as seeds of one recipe share a group; null alone")
    seed: int | None = Field(description="the recipe's seed; null when recipe.json cannot be read")


class RunAnswer(BaseModel):
    run: RunSummary


class RunsCreated(RunAnswer):
    runs: list[RunSummary] = Field(description="every run created, one per seed, in the order of the seeds; "
                                               "run is the first")


class RunList(BaseModel):
    runs: list[RunSummary] = Field(description="newest first")


class MetricsRow(BaseModel):
    """One epoch of metrics.csv (train.METRIC_COLUMNS)."""

    epoch: int
    train_seconds: float
    seconds: float
    mae: float | None
    mse: float | None
    psnr: float | None


class RunDetail(BaseModel):
    run: RunSummary
    metrics: list[MetricsRow] = Field(description="every epoch, in order")


class NetworkLayer(BaseModel):
    """One hidden layer of the network view (network.network_view): its units drawn, their ranges, its dynamics."""

    layer: int = Field(description="1..layers")
    units: int
    shown: list[int] = Field(description="the units drawn, top to bottom: every one, or an even sample")
    sampled: bool = Field(description="true when only an even sample of a wide layer is drawn")
    activation: str
    ranges: list[tuple[float, float]] = Field(description="each drawn unit's (min, max) over the image")
    dynamics: dict[str, list[float | None]] = Field(
        description="layers.csv at each epoch's end: epoch, act_std, dead_fraction, grad_rms, log10_update_ratio "
                    "(null: not defined for this layer)")
    image: str = Field(description="URL of the drawn units' thumbnails, one column, as a PNG")


class Network(BaseModel):
    """The network view of a run: its hidden layers as columns, from the latest checkpoint."""

    epoch: int = Field(description="the checkpoint's epoch")
    tile: tuple[int, int] = Field(description="(width, height) of one thumbnail in pixels")
    gutter: int = Field(description="pixels between thumbnails")
    layers: list[NetworkLayer]


class Neurons(BaseModel):
    """One layer's units as a grid of heatmaps (neurons.NeuronGrid), row-major."""

    layer: int = Field(description="0 the encoding, 1..layers the hidden layers")
    layers: int
    units: int
    constant: int = Field(description="units constant over the image")
    columns: int
    rows: int
    tile: tuple[int, int] = Field(description="(width, height) of one tile in pixels")
    gutter: int = Field(description="pixels between tiles")
    epoch: int | None = Field(description="the checkpoint's epoch")
    silent: int | None = Field(description="rectifier layers: units that never fire; else null")
    ranges: list[tuple[float, float]] = Field(description="each unit's (min, max) over the image, in unit order")
    summary: str
    image: str = Field(description="URL of the grid as a PNG")
