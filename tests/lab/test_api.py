"""The lab's HTTP API through a test client: uploads, run life cycle, refusals, restarts.

The runs train for real in worker processes (tiny images, so seconds), and every
check reads the run directory on disk as well as the API's answer.
"""

import hashlib
import io
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import wait_for
from PIL import Image

from monalisa.lab import store
from monalisa.lab.app import create_app
from monalisa.lab.jobs import Lab

SHORT = 'arch = "2x8"\nepochs = 3'  # a run that ends in a second or two
LONG = "epochs = 100000"  # quick's 4x300 at 32 px: ~0.1 s an epoch, runs until paused or stopped


def png(width=24, height=16, colour=(200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def create(client, recipe_text=SHORT, image="astronaut", size="32", preset="quick"):
    response = client.post("/api/runs", json={"image": image, "size": size, "preset": preset,
                                               "recipe_text": recipe_text})
    assert response.status_code == 201, response.text
    return response.json()["run"]


# -- uploads -------------------------------------------------------------------------


def test_upload_is_kept_by_content_and_listed(lab_client):
    client, lab = lab_client
    data = png()
    response = client.post("/api/images", files={"file": ("../../../etc/evil name.png", data, "image/png")})
    assert response.status_code == 201, response.text
    upload = response.json()
    digest = hashlib.sha256(data).hexdigest()
    assert upload["id"] == f"upload:{digest}"
    assert (upload["width"], upload["height"]) == (24, 16)
    assert upload["name"] == "evil name.png"  # display only
    # Stored under its hash, inside the runs root; the browser's name is no path anywhere.
    assert (lab.root / ".uploads" / digest).read_bytes() == data
    assert not any("evil" in p.name for p in lab.root.parent.rglob("*"))
    # The same bytes under another name are the same image.
    again = client.post("/api/images", files={"file": ("other.png", data, "image/png")}).json()
    assert again["id"] == upload["id"]
    listed = client.get("/api/images").json()
    assert [u["id"] for u in listed["uploads"]] == [upload["id"]]
    assert "astronaut" in [b["id"] for b in listed["builtin"]]
    thumbnail = client.get(upload["thumbnail"])
    assert thumbnail.status_code == 200
    assert Image.open(io.BytesIO(thumbnail.content)).size == (24, 16)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
    (png()[:40], "not an image"),  # a truncated PNG: the header reads, the pixels do not
])
def test_upload_that_is_not_an_image_is_refused(lab_client, data, message):
    client, lab = lab_client
    response = client.post("/api/images", files={"file": ("x.png", data, "image/png")})
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert response.json()["field"] == "file"
    assert not list((lab.root / ".uploads").glob("[0-9a-f]*")) if (lab.root / ".uploads").exists() else True


def test_oversize_upload_is_refused(lab_client, monkeypatch):
    client, lab = lab_client
    monkeypatch.setattr(store, "MAX_UPLOAD_BYTES", 1000)
    big = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # noise: ~12 kB as PNG
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    response = client.post("/api/images", files={"file": ("big.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 413
    assert "larger than" in response.json()["error"] or "limit" in response.json()["error"]
    assert not (lab.root / ".uploads").exists() or not list((lab.root / ".uploads").iterdir())


def test_upload_over_the_pixel_cap_is_refused_before_decoding(lab_client, monkeypatch):
    client, lab = lab_client
    monkeypatch.setattr(store, "MAX_UPLOAD_PIXELS", 100)
    response = client.post("/api/images", files={"file": ("wide.png", png(20, 20), "image/png")})
    assert response.status_code == 413
    assert "20x20" in response.json()["error"] and "megapixels" in response.json()["error"]


def test_upload_with_an_oversize_content_length_is_refused_unread(lab_client):
    client, _ = lab_client
    response = client.post("/api/images", content=b"x" * 10,
                           headers={"content-type": "multipart/form-data; boundary=b",
                                    "content-length": str(store.MAX_UPLOAD_BYTES * 2)})
    assert response.status_code == 413


def test_upload_streamed_past_the_cap_without_a_length_is_refused_as_too_large(lab_client, monkeypatch):
    # No Content-Length (a chunked body): the cap stops it while it is read, and says so, not
    # "error parsing the body" (FastAPI's answer to any failure while it reads a form).
    client, lab = lab_client
    monkeypatch.setattr(store, "MAX_UPLOAD_BYTES", 1000)

    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + png()
        for _ in range(3):  # past the cap and the 1 MB allowed for the envelope
            yield b"\0" * 2**20
        yield b"\r\n--b--\r\n"

    response = client.post("/api/images", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413, response.text
    assert "larger than" in response.json()["error"] and response.json()["field"] == "file"
    assert not (lab.root / ".uploads").exists() or not list((lab.root / ".uploads").iterdir())


# -- recipes and set-up errors -------------------------------------------------------


def test_recipe_check_gives_the_canonical_recipe(lab_client):
    client, _ = lab_client
    answer = client.post("/api/recipes/check", json={"preset": "quick", "recipe_text": 'arch = "3x20"\nlr = 0.05'})
    assert answer.status_code == 200
    body = answer.json()
    assert body["recipe"]["arch"] == [20, 20, 20] and body["recipe"]["lr"] == 0.05
    assert body["recipe"]["epochs"] == 30  # from the preset
    assert body["parameters"] == (2 * 20 + 20) + 2 * (20 * 20 + 20) + (20 * 3 + 3)
    assert "arch = [20, 20, 20]" in body["toml"]


@pytest.mark.parametrize("body, field, words", [
    ({"preset": "quick", "recipe_text": 'arch = "4y300"'}, "arch", "malformed --arch '4y300'"),
    ({"preset": "quick", "recipe_text": 'activation = "swish"'}, "activation", "unknown activation 'swish'"),
    ({"preset": "quick", "recipe_text": "epochs = 0"}, "epochs", "epochs must be a positive whole number"),
    ({"preset": "quick", "recipe_text": "colour = 3"}, "recipe_text", "unknown recipe key 'colour'"),
    ({"preset": "quick", "recipe_text": "arch = "}, "recipe_text", "not valid TOML"),
    ({"preset": "nope"}, "preset", "unknown preset 'nope'"),
    ({"preset": "quick", "recipe_text": "arch = [100000, 100000]"}, "arch", "parameters"),
])
def test_bad_recipe_names_its_field_with_the_cli_message(lab_client, body, field, words):
    client, lab = lab_client
    for path, image in (("/api/recipes/check", {}), ("/api/runs", {"image": "astronaut"})):
        response = client.post(path, json={**image, **body})
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field
        assert words in response.json()["error"]
        assert "\n" not in response.json()["error"]
    assert not any(lab.root.iterdir())  # nothing created


@pytest.mark.parametrize("image, size, field", [
    ("nosuchimage", "32", "image"),
    ("upload:" + "0" * 64, "32", "image"),
    ("../etc/passwd", "32", "image"),
    ("astronaut", "32y32", "size"),
    ("astronaut", "1", "size"),
])
def test_bad_image_or_size_names_its_field(lab_client, image, size, field):
    client, lab = lab_client
    response = client.post("/api/runs", json={"image": image, "size": size, "preset": "quick"})
    assert response.status_code in (400, 404)
    assert response.json()["field"] == field
    assert not any(lab.root.iterdir())


# -- the run life cycle --------------------------------------------------------------


def test_a_run_trains_to_completion_and_serves_its_files(lab_client):
    client, lab = lab_client
    run = create(client)
    assert run["status"] in ("queued", "running")
    assert run["epochs"] == 3 and run["describe"] == "2x8 leaky_relu sgd b1"
    done = wait_for(client, run["id"], lambda r: r["status"] == "complete")
    assert done["epoch"] == 3 and done["actions"] == []
    metrics = client.get(f"/api/runs/{run['id']}").json()["metrics"]
    path = lab.root / run["id"]
    with open(path / "metrics.csv") as f:
        assert len(f.readlines()) == 1 + 3
    assert [row["epoch"] for row in metrics] == [1, 2, 3]
    assert done["psnr"] == pytest.approx(metrics[-1]["psnr"])
    for key in ("target", "final", "gif", "mp4", "curves", "recipe"):
        url = done["files"][key]
        response = client.get(url)
        assert response.status_code == 200, key
        name = url.rsplit("/", 1)[1]
        assert response.content == (path / name).read_bytes()
    assert json.loads(client.get(done["files"]["recipe"]).content)["arch"] == [8, 8]
    frame = client.get(done["frame"])
    assert frame.status_code == 200
    assert Image.open(io.BytesIO(frame.content)).size == (32, 32)
    # Listed, newest first, with the same figures.
    listed = client.get("/api/runs").json()["runs"]
    assert [r["id"] for r in listed] == [run["id"]] and listed[0]["psnr"] == done["psnr"]
    # The neuron view of its first layer: 8 units.
    neurons = client.get(f"/api/runs/{run['id']}/neurons", params={"layer": 1}).json()
    assert neurons["units"] == 8 and neurons["layers"] == 2 and neurons["epoch"] == 3
    picture = client.get(neurons["image"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert client.get(f"/api/runs/{run['id']}/neurons", params={"layer": 5}).status_code == 400


def test_pause_resume_stop(lab_client):
    client, lab = lab_client
    run = create(client, LONG)
    run_id = run["id"]
    # The live overlay follows the worker's reports, which may reach the server a moment after the
    # epoch's row reaches the disk (a busy machine): wait for both.
    running = wait_for(client, run_id, lambda r: r["status"] == "running" and r["epoch"] >= 2
                       and (r["live"] or {}).get("epoch", 0) >= 2)
    assert running["actions"] == ["pause", "stop"]
    assert client.get(f"/api/runs/{run_id}/frame.png").status_code == 200

    assert client.post(f"/api/runs/{run_id}/pause").status_code == 200
    paused = wait_for(client, run_id, lambda r: r["status"] == "paused")
    assert paused["actions"] == ["resume", "stop"]
    on_disk = json.loads((lab.root / run_id / "run.json").read_text())
    assert on_disk["status"] == "paused"
    epochs_at_pause = paused["epoch"]
    time.sleep(1.0)
    assert client.get(f"/api/runs/{run_id}").json()["run"]["epoch"] == epochs_at_pause  # nothing trains

    refused = client.post(f"/api/runs/{run_id}/pause")
    assert refused.status_code == 409 and "cannot pause" in refused.json()["error"]

    assert client.post(f"/api/runs/{run_id}/resume").status_code == 200
    wait_for(client, run_id, lambda r: r["status"] == "running" and r["epoch"] > epochs_at_pause)
    metrics = client.get(f"/api/runs/{run_id}").json()["metrics"]
    assert [row["epoch"] for row in metrics] == list(range(1, len(metrics) + 1))  # no epoch lost or repeated

    assert client.post(f"/api/runs/{run_id}/stop").status_code == 200
    stopped = wait_for(client, run_id, lambda r: r["status"] == "stopped")
    assert stopped["files"]["gif"] and stopped["files"]["final"] and stopped["files"]["mp4"]
    assert stopped["actions"] == ["resume"]


def test_jobs_limit_queues_the_rest(tmp_path):
    lab = Lab(tmp_path / "runs", jobs=1)
    with TestClient(create_app(lab), base_url="http://127.0.0.1:8765") as client:
        first = create(client, LONG)
        second = create(client, SHORT)
        wait_for(client, first["id"], lambda r: r["status"] == "running" and r["epoch"] >= 1)
        assert client.get(f"/api/runs/{second['id']}").json()["run"]["status"] == "queued"
        client.post(f"/api/runs/{first['id']}/pause")
        wait_for(client, second["id"], lambda r: r["status"] == "complete")


def test_a_restarted_server_finds_runs_on_disk(tmp_path):
    root = tmp_path / "runs"
    lab = Lab(root, jobs=1)
    with TestClient(create_app(lab), base_url="http://127.0.0.1:8765") as client:
        long_run = create(client, LONG)
        waiting = create(client, SHORT)
        wait_for(client, long_run["id"], lambda r: r["status"] == "running" and r["epoch"] >= 1)
    # Closing the server paused the running run and left the waiting one queued.
    assert json.loads((root / long_run["id"] / "run.json").read_text())["status"] == "paused"
    assert json.loads((root / waiting["id"] / "run.json").read_text())["status"] == "queued"
    # A server that died mid-run left 'running' on disk.
    info = json.loads((root / long_run["id"] / "run.json").read_text())
    (root / long_run["id"] / "run.json").write_text(json.dumps({**info, "status": "running"}))

    lab = Lab(root, jobs=1)
    with TestClient(create_app(lab), base_url="http://127.0.0.1:8765") as client:
        assert client.get(f"/api/runs/{long_run['id']}").json()["run"]["status"] == "interrupted"
        wait_for(client, waiting["id"], lambda r: r["status"] == "complete")  # the queue goes on by itself
        client.post(f"/api/runs/{long_run['id']}/resume")
        before = long_run_epoch = client.get(f"/api/runs/{long_run['id']}").json()["run"]["epoch"]
        assert before >= 1
        wait_for(client, long_run["id"], lambda r: r["status"] == "running" and r["epoch"] > long_run_epoch)


def test_a_complete_run_can_be_extended(lab_client):
    client, lab = lab_client
    run = create(client)
    wait_for(client, run["id"], lambda r: r["status"] == "complete")
    refused = client.post(f"/api/runs/{run['id']}/resume", json={"epochs": 2})
    assert refused.status_code == 409 and refused.json()["field"] == "epochs"
    assert client.post(f"/api/runs/{run['id']}/resume", json={"epochs": 5}).status_code == 200
    done = wait_for(client, run["id"], lambda r: r["status"] == "complete" and r["epoch"] == 5)
    assert done["epochs"] == 5


def test_run_again_trains_on_the_same_pixels(lab_client):
    client, lab = lab_client
    first = create(client)
    again = create(client, image=f"run:{first['id']}", size="64")  # size is ignored for a run's image
    assert again["source"] == f"run:{first['id']}"
    assert np.array_equal(np.load(lab.root / first["id"] / "target.npy"), np.load(lab.root / again["id"] / "target.npy"))


def test_seeds_make_a_group_of_ordinary_runs(lab_client):
    client, lab = lab_client
    response = client.post("/api/runs", json={"image": "astronaut", "size": "24", "preset": "quick",
                                               "recipe_text": SHORT, "seeds": 3})
    assert response.status_code == 201, response.text
    runs = response.json()["runs"]
    assert response.json()["run"] == runs[0]
    group = runs[0]["group"]
    assert group and [r["group"] for r in runs] == [group] * 3
    assert [r["seed"] for r in runs] == [0, 1, 2]  # the recipe's seed (0) and the two after it
    assert [r["id"] for r in runs] == [f"{group}-s{seed}" for seed in (0, 1, 2)]
    for run in runs:  # each an ordinary run directory, with its own seed in its recipe
        assert json.loads((lab.root / run["id"] / "recipe.json").read_text())["seed"] == run["seed"]
        assert json.loads((lab.root / run["id"] / "run.json").read_text())["group"] == group
    done = [wait_for(client, r["id"], lambda r: r["status"] == "complete") for r in runs]
    assert len({d["psnr"] for d in done}) == 3  # three seeds, three different results
    # The same request again in the same second: a group of its own, no run directory shared.
    listed = client.post("/api/runs", json={"image": "astronaut", "size": "24", "preset": "quick",
                                            "recipe_text": SHORT, "seeds": "0,5"}).json()["runs"]
    assert [r["seed"] for r in listed] == [0, 5] and listed[0]["group"] != group
    for r in listed:
        wait_for(client, r["id"], lambda r: r["status"] == "complete")
    # One seed, or none: a run on its own.
    alone = create(client)
    assert alone["group"] is None and alone["seed"] == 0
    wait_for(client, alone["id"], lambda r: r["status"] == "complete")


def test_a_group_stopped_after_a_pause_and_a_resume_stops_every_seed_with_its_ending(lab_client):
    """Three seeds, two slots: paused, resumed, and stopped while the resumed workers start. Every seed
    ends stopped with its ending, the one still queued (never trained) too: its untrained network."""
    client, lab = lab_client
    response = client.post("/api/runs", json={"image": "astronaut", "size": "24", "preset": "quick",
                                               "recipe_text": 'arch = "2x8"\n' + LONG, "seeds": 3})
    assert response.status_code == 201, response.text
    ids = [run["id"] for run in response.json()["runs"]]
    wait_for(client, ids[0], lambda r: r["status"] == "running" and r["epoch"] >= 1)
    for run_id in ids:  # as the page's group controls do: each seed in turn
        assert client.post(f"/api/runs/{run_id}/pause").status_code == 200
    for run_id in ids:
        wait_for(client, run_id, lambda r: r["status"] == "paused")
    for run_id in ids:
        assert client.post(f"/api/runs/{run_id}/resume").status_code == 200
    time.sleep(0.5)  # the resumed workers are starting (spawn, imports): the moment a stop used to be lost
    for run_id in ids:
        assert client.post(f"/api/runs/{run_id}/stop").status_code == 200
    for run_id in ids:
        stopped = wait_for(client, run_id, lambda r: r["status"] in ("stopped", "interrupted", "complete", "error"))
        assert stopped["status"] == "stopped", stopped
        assert all(stopped["files"][name] for name in ("final", "gif", "mp4", "curves")), stopped["files"]
        assert json.loads((lab.root / run_id / "run.json").read_text())["status"] == "stopped"


@pytest.mark.parametrize("seeds, words", [
    ("x", "write a number of seeds"),
    ("1,1", "lists a seed twice"),
    (0, "seeds must be 1 to"),
    (21, "at most 20 seeds"),
    ("0", "at least one seed"),
])
def test_bad_seeds_name_their_field_and_write_nothing(lab_client, seeds, words):
    client, lab = lab_client
    response = client.post("/api/runs", json={"image": "astronaut", "size": "24", "preset": "quick",
                                               "recipe_text": SHORT, "seeds": seeds})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "seeds" and words in response.json()["error"]
    assert client.get("/api/runs").json()["runs"] == []


@pytest.mark.parametrize("seeds, words", [
    ("18446744073709551616", "at most 20 seeds"),  # one number is a count
    ("0,18446744073709551616", "from 0 to 2**64 - 1"),
    ("0,123456789012345678901", "each from 0 to 2**64 - 1"),
    ([0, 2**64], "from 0 to 2**64 - 1"),
])
def test_a_seed_past_the_generators_range_says_the_range(lab_client, seeds, words):
    client, lab = lab_client
    response = client.post("/api/runs", json={"image": "astronaut", "size": "24", "preset": "quick",
                                               "recipe_text": SHORT, "seeds": seeds})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "seeds" and words in response.json()["error"]
    assert not any(lab.root.iterdir())


def test_the_largest_seed_trains(lab_client):
    """2**64 - 1 is the largest seed numpy's and torch's generators both take: a seed, not "write a number"."""
    client, lab = lab_client
    top = 2**64 - 1
    response = client.post("/api/runs", json={"image": "astronaut", "size": "24", "preset": "quick",
                                               "recipe_text": SHORT, "seeds": f"{top - 1},{top}"})
    assert response.status_code == 201, response.text
    runs = response.json()["runs"]
    assert [r["seed"] for r in runs] == [top - 1, top]
    done = [wait_for(client, r["id"], lambda r: r["status"] == "complete") for r in runs]
    assert json.loads((lab.root / runs[1]["id"] / "recipe.json").read_text())["seed"] == top
    assert all(d["epoch"] == 3 for d in done)
    # Past the top, counted from the recipe's seed: refused, with the range.
    response = client.post("/api/runs", json={"image": "astronaut", "size": "24", "preset": "quick",
                                               "recipe_text": SHORT + f"\nseed = {top}", "seeds": 2})
    assert response.status_code == 400 and response.json()["field"] == "seeds"
    assert "2**64 - 1" in response.json()["error"]


@pytest.mark.parametrize("path, body, field, words", [
    ("/api/runs", {"image": "astronaut", "colour": "red"}, "colour",
     "unknown field 'colour'; this request takes: image, size, preset, recipe_text, recipe, seeds"),
    ("/api/runs", {"image": "astronaut", "seed": 3}, "seed", "unknown field 'seed'"),  # for seeds: not ignored
    ("/api/runs", {"image": "astronaut", "s\u0435eds": 3}, "s\u0435eds", "non-ASCII character 'е' (U+0435"),
    ("/api/recipes/check", {"preset": "quick", "image": "astronaut"}, "image",
     "unknown field 'image'; this request takes: preset, recipe_text, recipe"),
    ("/api/runs/x/resume", {"epoch": 5}, "epoch", "unknown field 'epoch'; this request takes: epochs"),
])
def test_an_unknown_request_field_is_refused_by_name(lab_client, path, body, field, words):
    client, lab = lab_client
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field and words in response.json()["error"]
    assert "\n" not in response.json()["error"]
    assert not any(lab.root.iterdir())


@pytest.mark.parametrize("body, field", [
    ({"image": "x" * 60_000}, "image"),
    ({"image": "upload:" + "0" * 60_000}, "image"),
    ({"size": "9" * 60_000}, "size"),  # int() of these digits refuses outright: a 500 once
    ({"size": "x" * 60_000}, "size"),
    ({"recipe_text": 'activation = "' + "x" * 60_000 + '"'}, "activation"),
    ({"recipe_text": 'activation = "l\u0435aky_relu"'}, "activation"),
])
def test_a_huge_or_look_alike_value_is_quoted_short(lab_client, body, field):
    client, lab = lab_client
    response = client.post("/api/runs", json={"image": "astronaut", "size": "24", "preset": "quick", **body})
    assert response.status_code in (400, 404), response.text[:300]
    answer = response.json()
    assert answer["field"] == field and len(answer["error"]) < 500 and "\n" not in answer["error"]
    assert "characters)" in answer["error"] or "U+0435 CYRILLIC SMALL LETTER IE" in answer["error"]
    assert not any(lab.root.iterdir())


def test_a_recipe_text_giving_a_key_twice_is_refused(lab_client):
    client, lab = lab_client
    for path in ("/api/recipes/check", "/api/runs"):
        body = {"preset": "quick", "recipe_text": '{"epochs": 3, "arch": "2x8", "epochs": 500}'}
        response = client.post(path, json=body | ({"image": "astronaut"} if path == "/api/runs" else {}))
        assert response.status_code == 400, response.text
        assert response.json() == {"error": "the recipe text: the key 'epochs' is given twice; give each key once",
                                   "field": "recipe_text"}
    assert not any(lab.root.iterdir())


def test_a_group_of_seeds_uses_every_free_slot(lab_client):
    """Seeds 3 with jobs 2: two seeds train at once, the third waits; sent as the page sends it (the
    Seeds field as text, the recipe as the form's TOML)."""
    client, lab = lab_client
    assert lab.jobs == 2
    response = client.post("/api/runs", json={"image": "astronaut", "size": "32", "seeds": "3", "preset": "quick",
                                               "recipe_text": 'arch = [8, 8]\nepochs = 100000\n'})
    assert response.status_code == 201, response.text
    runs = response.json()["runs"]
    assert [r["status"] for r in runs] == ["running", "running", "queued"]
    # Both workers really train: each reports epochs while the third is still queued.
    first, second = (wait_for(client, r["id"], lambda r: r["epoch"] >= 1 and r["status"] == "running")
                     for r in runs[:2])
    assert client.get(f"/api/runs/{runs[2]['id']}").json()["run"]["status"] == "queued"
    assert sorted(lab.runner.running()) == sorted(r["id"] for r in runs[:2])
    # Stopping one frees its slot for the third (leaving the lab pauses the other two).
    assert client.post(f"/api/runs/{runs[0]['id']}/stop").status_code == 200
    wait_for(client, runs[0]["id"], lambda r: r["status"] == "stopped")
    wait_for(client, runs[2]["id"], lambda r: r["status"] == "running")
    assert client.get(f"/api/runs/{runs[1]['id']}").json()["run"]["status"] == "running"


def test_a_group_that_cannot_be_written_leaves_no_seed_behind(lab_client, monkeypatch):
    from monalisa.runs.directory import RunDirectory

    client, lab = lab_client
    create_directory = RunDirectory.create
    made = []

    def full_disk_on_the_third(path, *args, **kwargs):
        made.append(path)
        if len(made) == 3:
            raise OSError(28, "No space left on device")
        return create_directory(path, *args, **kwargs)

    monkeypatch.setattr(RunDirectory, "create", staticmethod(full_disk_on_the_third))
    response = client.post("/api/runs", json={"image": "astronaut", "size": "24", "preset": "quick",
                                               "recipe_text": SHORT, "seeds": 4})
    assert response.status_code == 507
    assert client.get("/api/runs").json()["runs"] == []
    assert not [p for p in lab.root.iterdir() if not p.name.startswith(".")]


def test_cli_runs_are_listed_and_nested_ones_too(lab_client):
    client, lab = lab_client
    from monalisa import Recipe, load_target, train_run

    target = load_target("astronaut", size=(12, 10))
    train_run(target, Recipe(arch=(4,), epochs=1), out=lab.root / "compare-x" / "runs" / "cli-run", quiet=True)
    listed = client.get("/api/runs").json()["runs"]
    assert [r["id"] for r in listed] == ["compare-x/runs/cli-run"]
    assert listed[0]["status"] == "complete"
    assert client.get("/runs/compare-x/runs/cli-run/final.png").status_code == 200
    assert client.get("/api/runs/compare-x/runs/cli-run/frame.png").status_code == 200


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "/runs/../secret.txt",
    "/runs/%2e%2e/secret.txt",
    "/runs/..%2Fsecret.txt",
    "/runs/x/..%2F..%2Fsecret.txt",
    "/runs/.uploads/whatever",
    "/runs/escape/secret.txt",  # a symlink out of the root
    "/runs/secret.txt",
    "/api/runs/..%2F..%2Fsecret/frame.png",
    "/api/runs/%2e%2e",
    "/api/runs/escape",
    "/api/runs/escape/neurons?layer=1",
])
def test_paths_outside_the_runs_root_are_refused(lab_client, url):
    client, lab = lab_client
    secret = lab.root.parent / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    outside = lab.root.parent / "outside-run"
    outside.mkdir()
    (outside / "run.json").write_text("{}")
    (outside / "secret.txt").write_text("TOP-SECRET-CONTENT")
    (lab.root / "escape").symlink_to(outside)
    response = client.get(url)
    assert response.status_code in (403, 404), (url, response.status_code)
    assert b"TOP-SECRET-CONTENT" not in response.content
    assert client.post("/api/runs/escape/pause").status_code == 404


def test_requests_from_other_hosts_and_origins_are_refused(lab_client):
    client, _ = lab_client
    rebound = client.get("/api/runs", headers={"host": "attacker.example"})
    assert rebound.status_code == 403
    cross = client.post("/api/runs", json={"image": "astronaut"}, headers={"origin": "http://attacker.example"})
    assert cross.status_code == 403 and "cross-origin" in cross.json()["error"]
    same = client.post("/api/recipes/check", json={"preset": "quick"}, headers={"origin": "http://127.0.0.1:8765"})
    assert same.status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1:8765@attacker.example", "[::1]attacker.example",
                                  "localhost:8765:attacker.example", "127.0.0.1/attacker.example"])
def test_a_host_header_with_a_loopback_name_inside_it_is_refused(lab_client, host):
    # A name, or a bracketed address, and at most a port: whatever else follows makes it another host.
    client, _ = lab_client
    response = client.get("/api/runs", headers={"host": host})
    assert response.status_code == 403, response.text
    assert "is not this lab" in response.json()["error"]
    assert client.get("/api/runs", headers={"host": "LOCALHOST:8765"}).status_code == 200
    assert client.get("/api/runs", headers={"host": "[::1]:8765"}).status_code == 200


def test_the_page_and_the_api_docs_are_served(lab_client):
    client, _ = lab_client
    page = client.get("/")
    assert page.status_code == 200 and "monalisa" in page.text
    schema = client.get("/openapi.json").json()
    for path in ("/api/images", "/api/runs", "/api/events", "/api/recipes/check"):
        assert path in schema["paths"]
    reference = client.get("/api")  # the API reference that needs no CDN
    assert reference.status_code == 200 and reference.headers["content-type"].startswith("text/html")
    for text in ("/api/runs/{run_id}/pause", "recipe_text (body)", "epochs (body)", "layer (query)"):
        assert text in reference.text
    options = client.get("/api/options").json()
    assert "quick" in options["presets"] and "leaky_relu" in options["choices"]["activation"]


# -- runs on uploads, and renders at any width --------------------------------------------------


def test_runs_on_an_upload_are_named_after_it_and_render_at_a_chosen_width(lab_client):
    client, lab = lab_client
    noise = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    named = client.post("/api/images", files={"file": ("../My Mona Lisa.png", buffer.getvalue(), "image/png")}).json()
    unnamed = client.post("/api/images", files={"file": ("蒙娜丽莎.png", png(), "image/png")}).json()
    run = create(client, image=named["id"], size="full")
    other = create(client, image=unnamed["id"], size="full")
    # The display name, kept to letters, digits, '_' and '-'; a name with none of them falls back to the hash.
    assert run["id"].startswith("My_Mona_Lisa-"), run["id"]
    assert other["id"].startswith(f"upload-{unnamed['id'][7:15]}-"), other["id"]
    assert {p.name for p in lab.root.iterdir() if not p.name.startswith(".")} == {run["id"], other["id"]}

    wait_for(client, run["id"], lambda r: r["status"] == "complete")
    url = f"/api/runs/{run['id']}/render.png"
    # At the training width the render is the final frame (one level of slack for float rounding).
    same = client.get(url, params={"width": 24})
    assert same.status_code == 200 and same.headers["content-type"] == "image/png"
    final = np.asarray(Image.open(lab.root / run["id"] / "final.png").convert("RGB")).astype(int)
    assert np.abs(np.asarray(Image.open(io.BytesIO(same.content)).convert("RGB")).astype(int) - final).max() <= 1
    wide = client.get(url, params={"width": 60})
    assert Image.open(io.BytesIO(wide.content)).size == (60, 40)  # the aspect ratio kept
    assert f'filename="{run["id"]}-render-60x40.png"' in wide.headers["content-disposition"]
    for width in ("0", "100000", "wide"):
        refused = client.get(url, params={"width": width})
        assert refused.status_code == 400 and refused.json()["field"] == "width", refused.text


def test_the_network_view_serves_each_layer_its_units_and_dynamics(lab_client):
    client, lab = lab_client
    run = create(client)  # 2x8, 3 epochs
    wait_for(client, run["id"], lambda r: r["status"] == "complete")
    view = client.get(f"/api/runs/{run['id']}/network")
    assert view.status_code == 200
    view = view.json()
    assert view["epoch"] == 3 and [layer["layer"] for layer in view["layers"]] == [1, 2]
    first = view["layers"][0]
    assert first["units"] == 8 and first["shown"] == list(range(8)) and first["sampled"] is False
    assert first["dynamics"]["epoch"] == [1, 2, 3] and len(first["dynamics"]["grad_rms"]) == 3
    from monalisa.runs.directory import RunDirectory

    rows = [r for r in RunDirectory.open(lab.root / run["id"]).layers() if r["layer"] == 1 and r["fraction"] == 1.0]
    assert first["dynamics"]["grad_rms"] == pytest.approx([r["grad_rms"] for r in rows])
    column = client.get(first["image"])
    assert column.status_code == 200 and column.headers["content-type"] == "image/png"
    width, height = view["tile"]
    assert Image.open(io.BytesIO(column.content)).size == (width, 8 * height + 7 * view["gutter"])
    unit = client.get(f"/api/runs/{run['id']}/unit.png", params={"layer": 2, "unit": 7})
    assert unit.status_code == 200 and max(Image.open(io.BytesIO(unit.content)).size) == 256
    for params in ({"layer": 3, "unit": 0}, {"layer": 1, "unit": 8}):
        refused = client.get(f"/api/runs/{run['id']}/unit.png", params=params)
        assert refused.status_code == 400 and "out of range" in refused.json()["error"]
    assert client.get("/api/runs/nothing-here/network").status_code == 404
    # The neuron view's units carry their values too (shown on hover)
    neurons = client.get(f"/api/runs/{run['id']}/neurons", params={"layer": 1}).json()
    assert len(neurons["ranges"]) == 8 and all(low <= high for low, high in neurons["ranges"])
