"""The lab API's typed answers (lab/schemas.py): every route in the schema, every answer its model,
non-finite numbers as null everywhere (the event stream too), and the lab's bounded picture caches.

The runs here are trained once in-process (a 2x8 network, two epochs on a 12x10 image) and copied
into each lab's root; a perfect fit is made by writing inf and nan into its metrics.csv, as a run
that reached zero error would.
"""

import io
import json
import os
import shutil
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from PIL import Image

from monalisa.data.images import load_target
from monalisa.lab import jobs, routes, schemas
from monalisa.lab.app import create_app
from monalisa.lab.jobs import Lab
from monalisa.recipes.recipe import Recipe
from monalisa.runs.lifecycle import train_run
from monalisa.training.trainer import METRIC_COLUMNS

pytestmark = pytest.mark.usefixtures("one_thread")
LAB_JOBS = 1
RUN = "perfect"
# metrics.csv of a run that fits exactly at epoch 2 (mse 0: PSNR inf), with a NaN in epoch 1.
METRICS = ",".join(METRIC_COLUMNS) + "\n1,0.1,0.2,0.05,nan,26.1\n2,0.1,0.4,0,0,inf\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / RUN
    train_run(load_target("astronaut", size=(12, 10)), Recipe(arch=(8, 8), epochs=2), out, engine="batched",
              quiet=True)
    (out / "metrics.csv").write_text(METRICS)
    return out


@pytest.fixture
def perfect(lab_client, trained):
    client, lab = lab_client
    shutil.copytree(trained, lab.root / RUN)
    return client, lab


def as_model(model, data):
    """``data`` validated by ``model`` and written back as the API writes it: equal to ``data`` only when the
    model has exactly its keys (a key the model lacks would be dropped, one it wants but lacks refused)."""
    return json.loads(schemas.json_text(model.model_validate(data).model_dump(mode="json")))


# -- the schema --------------------------------------------------------------------------


def test_every_api_route_documents_its_answer_and_errors(tmp_path):
    lab = Lab(tmp_path / "runs", jobs=1)
    try:
        schema = create_app(lab, manage=False).openapi()
    finally:
        lab.close()
    models = schema["components"]["schemas"]
    routes = [(path, method, operation) for path, item in schema["paths"].items() if path.startswith("/api")
              for method, operation in item.items()]
    assert len(routes) >= 16
    for path, method, operation in routes:
        where = f"{method.upper()} {path}"
        success = operation["responses"].get("200") or operation["responses"].get("201")
        assert success and success.get("content"), where
        for media, content in success["content"].items():
            assert content.get("schema"), where
            if media == "application/json":
                ref = content["schema"]["$ref"].rsplit("/", 1)[-1]
                assert models[ref]["properties"], where
        assert "422" not in operation["responses"], where  # the lab answers 400, in its own shape
        for status, answer in operation["responses"].items():
            if status not in ("200", "201"):
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody"), where
    summary = models["RunSummary"]["properties"]
    assert {"psnr", "best_psnr", "files", "live", "actions"} <= set(summary)
    assert set(models["RecipeFields"]["properties"]) == set(Recipe().to_dict())


@pytest.mark.parametrize("model, body", [
    (schemas.RunRequest, {"image": "astronaut"}),
    (schemas.CheckRequest, {"preset": "quick"}),
    (schemas.ResumeRequest, {"epochs": 5}),
])
def test_every_request_refuses_a_field_it_does_not_declare(model, body):
    import pydantic

    assert model.model_validate(body)  # the declared fields are taken
    with pytest.raises(pydantic.ValidationError) as info:
        model.model_validate({**body, "colour": "red"})
    error = info.value.errors()[0]
    assert error["type"] == schemas.UNKNOWN_FIELD and error["ctx"]["field"] == "colour"
    assert error["ctx"]["message"] == f"unknown field 'colour'; this request takes: {', '.join(model.model_fields)}"
    # ... and the schema says so, for a client generated from it.
    assert model.model_json_schema()["additionalProperties"] is False


def test_the_reference_page_lists_each_answers_fields(lab_client):
    client, _ = lab_client
    page = client.get("/api").text
    assert "RunDetail</a> {run: RunSummary, metrics: list[MetricsRow]}" in page
    assert "best_psnr</code>: float | null" in page
    assert "tile: [int, int]" in page  # the neurons answer, inline in its row


# -- the answers -------------------------------------------------------------------------


def test_real_answers_are_exactly_their_models(perfect):
    client, lab = perfect
    uploaded = client.post("/api/images", files={"file": ("x.png", png(), "image/png")})
    answers = [
        (schemas.ImageInfo, uploaded),
        (schemas.Images, client.get("/api/images")),
        (schemas.Options, client.get("/api/options")),
        (schemas.RecipeCheck, client.post("/api/recipes/check", json={"recipe_text": 'arch = "2x4"'})),
        (schemas.RunList, client.get("/api/runs")),
        (schemas.RunDetail, client.get(f"/api/runs/{RUN}")),
        (schemas.Neurons, client.get(f"/api/runs/{RUN}/neurons", params={"layer": 2})),
        (schemas.ErrorBody, client.post(f"/api/runs/{RUN}/pause")),  # complete: nothing to pause
    ]
    for model, response in answers:
        assert response.headers["content-type"] == "application/json", model
        assert as_model(model, response.json()) == response.json(), model.__name__
    # The back end's own dicts, not only what FastAPI let through: the same keys as the models.
    assert set(lab.summary(RUN)) == set(schemas.RunSummary.model_fields)
    assert set(lab.metrics(RUN)[0]) == set(schemas.MetricsRow.model_fields)
    meta, _ = lab.neuron_grid(RUN, 1)
    assert set(meta) | {"image"} == set(schemas.Neurons.model_fields)


def test_non_finite_numbers_are_null_in_every_answer(perfect):
    client, _ = perfect
    listed = client.get("/api/runs").json()["runs"][0]
    one = client.get(f"/api/runs/{RUN}").json()
    for run in (listed, one["run"]):
        assert run["epoch"] == 2 and run["psnr"] is None and run["best_psnr"] is None  # inf
        assert run["mae"] == 0
    assert one["metrics"][0]["mse"] is None and one["metrics"][0]["psnr"] == pytest.approx(26.1)  # nan; finite
    assert one["metrics"][1]["psnr"] is None
    assert "Infinity" not in client.get(f"/api/runs/{RUN}").text and "NaN" not in client.get("/api/runs").text


def test_the_event_stream_writes_non_finite_numbers_as_null(tmp_path, trained, monkeypatch):
    """Over a real socket (a test client would wait for the endless stream to end)."""
    lab = Lab(tmp_path / "runs", jobs=1)
    shutil.copytree(trained, lab.root / RUN)
    listeners = []
    subscribe = lab.subscribe
    monkeypatch.setattr(lab, "subscribe", lambda listener: (listeners.append(listener), subscribe(listener)))
    monkeypatch.setattr(routes, "KEEPALIVE_SECONDS", 0.2)  # the stream notices the client left this soon
    server = uvicorn.Server(uvicorn.Config(create_app(lab, manage=False), log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/events"
        with httpx.stream("GET", url, timeout=10) as response:
            lines = response.iter_lines()
            assert next(lines) == "retry: 2000"  # sent once the stream listens
            # What the lab broadcasts when the run changes and when an epoch ends.
            listeners[0]({"type": "run", "run": lab.summary(RUN)})
            listeners[0]({"type": "epoch", "id": RUN, "row": lab.metrics(RUN)[-1]})
            events = []
            for line in lines:
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                if len(events) == 2:
                    break
        assert events[0]["run"]["psnr"] is None and events[0]["run"]["best_psnr"] is None
        assert as_model(schemas.RunSummary, events[0]["run"]) == events[0]["run"]
        assert events[1]["row"]["psnr"] is None and events[1]["row"]["epoch"] == 2
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        lab.close()
    assert not thread.is_alive()


def test_a_limit_names_its_field(lab_client):
    client, lab = lab_client
    response = client.post("/api/runs", json={"image": "astronaut", "size": "100000x100000"})
    assert response.status_code == 400
    assert response.json()["field"] == "size" and "pixels" in response.json()["error"]
    assert not any(lab.root.iterdir())


# -- the caches ----------------------------------------------------------------------------


def test_thumbnails_are_kept_up_to_their_bound_oldest_out_first(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "THUMBNAILS", 2)
    lab = Lab(tmp_path / "runs", jobs=1)
    drawn = []
    image_pixels = lab.image_pixels
    monkeypatch.setattr(lab, "image_pixels", lambda image_id: (drawn.append(image_id), image_pixels(image_id))[1])
    try:
        for name in ("astronaut", "camera", "coins", "coins", "camera"):  # the third pushes the first out
            picture = Image.open(io.BytesIO(lab.thumbnail(name)))
            assert max(picture.size) == jobs.THUMBNAIL_SIDE
        assert drawn == ["astronaut", "camera", "coins"]
        lab.thumbnail("astronaut")
        assert drawn[-1] == "astronaut" and len(drawn) == 4
    finally:
        lab.close()


def test_neuron_grids_are_kept_up_to_their_bound_and_redrawn_for_a_new_checkpoint(tmp_path, trained,
                                                                                  monkeypatch):
    from monalisa.views import neurons

    monkeypatch.setattr(jobs, "NEURON_GRIDS", 2)
    lab = Lab(tmp_path / "runs", jobs=1)
    shutil.copytree(trained, lab.root / RUN)
    drawn = []
    run_neurons = neurons.run_neurons
    monkeypatch.setattr(neurons, "run_neurons", lambda path, layer: (drawn.append(layer), run_neurons(path, layer))[1])
    try:
        for layer in (1, 2, 0, 0, 2):  # the third pushes the first out
            meta, data = lab.neuron_grid(RUN, layer)
            assert meta["layer"] == layer and data.startswith(b"\x89PNG")
        assert drawn == [1, 2, 0]
        lab.neuron_grid(RUN, 1)
        assert drawn == [1, 2, 0, 1]
        checkpoint = lab.root / RUN / "checkpoint.pt"
        saved = checkpoint.stat().st_mtime_ns
        os.utime(checkpoint, ns=(saved, saved + 10**9))  # a worker saved a newer checkpoint: drawn again
        lab.neuron_grid(RUN, 1)
        assert drawn == [1, 2, 0, 1, 1]
    finally:
        lab.close()


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 60)).save(buffer, format="PNG")
    return buffer.getvalue()
