"""The lab's answers when things go wrong: odd run folders, damaged run files, a full disk, bad input.

Every error the API sends must be {"error": "<one line>", "field": name | null}, with a 4xx where
the request was at fault; a full disk is a 507 that leaves no half-written run or upload behind.
A full disk is simulated in-process by making one write raise ENOSPC.
"""

import errno
import io
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from monalisa.data.images import Target
from monalisa.lab import store
from monalisa.lab.app import create_app
from monalisa.lab.jobs import Lab
from monalisa.lab.middleware import INTERNAL_ERROR
from monalisa.recipes.recipe import get_preset
from monalisa.runs.directory import RunDirectory

SHORT = 'arch = "2x8"\nepochs = 3'  # a run that ends in a second or two


LAB_JOBS = 1  # conftest's lab_client: one worker


def make_run(root: Path, run_id: str, status: str = "complete") -> Path:
    """A run directory as the CLI leaves it, without training: recipe, target, run.json."""
    target = Target(name="t", pixels=np.full((6, 8, 3), 0.5, dtype=np.float32))
    run = RunDirectory.create(root / run_id, get_preset("quick").replace(arch=(8,), epochs=3), target,
                              {"preset": "quick"})
    run.update_info(status=status)
    run.unlock()  # create() leaves the caller as the run's writer
    return run.path


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_error(response, status: int | None = None) -> dict:
    """The lab's error shape: exactly error and field, the error one non-empty line."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error", "field"}, body
    assert body["error"].strip() and "\n" not in body["error"], body
    if status is not None:
        assert response.status_code == status, body
    return body


def everything_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


# -- the listing -------------------------------------------------------------------


def test_runs_with_odd_names_are_skipped_and_logged_once(lab_client, caplog):
    client, lab = lab_client
    make_run(lab.root, "good")
    make_run(lab.root, "compare-x/runs/a")  # nested comparison runs still listed
    make_run(lab.root, "my\\run")
    make_run(lab.root, "x" * 201)
    make_run(lab.root, "odd\\folder/runs/b")  # its id would hold the backslash too
    os.mkdir(os.path.join(os.fsencode(lab.root), b"latin1-\xe9"))  # not UTF-8: no JSON string can hold it
    make_run(lab.root, os.fsdecode(b"latin1-\xe9/runs/c"))
    with caplog.at_level(logging.WARNING, logger="monalisa.lab.store"):
        for _ in range(2):  # the page polls the list: the second listing logs nothing new
            response = client.get("/api/runs")
            assert response.status_code == 200, response.text
            assert sorted(run["id"] for run in response.json()["runs"]) == ["compare-x/runs/a", "good"]
    skipped = [record.getMessage() for record in caplog.records if record.name == "monalisa.lab.store"]
    assert len(skipped) == 4, skipped
    assert any("my\\\\run" in line and "backslash" in line for line in skipped)
    assert any("x" * 201 in line and "201 characters" in line for line in skipped)
    assert any("odd\\\\folder" in line for line in skipped)
    assert any("UTF-8" in line for line in skipped)
    # Every listed run answers on its own.
    assert client.get("/api/runs/compare-x/runs/a").json()["run"]["status"] == "complete"


# -- damaged run files ---------------------------------------------------------------


DAMAGE = [
    ("recipe.json", "garbage{", "recipe.json is unreadable"),
    ("recipe.json", '{"epochs": "many", "arch": 5}', "recipe.json is unreadable"),
    ("recipe.json", "[1, 2]", "recipe.json is unreadable"),
    ("recipe.json", None, "recipe.json is missing"),
    ("run.json", "[1]", "run.json is unreadable"),
    ("run.json", '{"image": "t", "width": 8, "height": 6, "created": 5, "status": "complete"}',
     "run.json is unreadable"),
    ("run.json", '{"image": "t", "width": 8, "height": 6, "status": ["complete"]}', "run.json is unreadable"),
    ("metrics.csv", "epoch,psnr\n1\nx,y,z\n", "metrics.csv is unreadable"),
    ("metrics.csv", "epoch,psnr\n1,20\n", "metrics.csv is unreadable"),  # columns the list reads are missing
    ("metrics.csv", b"\xff\xfe\x00garbage", "metrics.csv is unreadable"),
    # without seconds and mse, which the run's answer (MetricsRow) names: that answer was a 500
    ("metrics.csv", "epoch,train_seconds,mae,psnr\n1,0.1,0.2,20\n", "metrics.csv is unreadable"),
    # a header of 300,000 columns (3 MB): refused by its length before it is split (it was ~100 MB of keys)
    ("metrics.csv", "epoch,train_seconds,seconds,mae,mse,psnr," + ",".join(f"c{i}" for i in range(300_000)) + "\n",
     "a line longer than 1,024 characters"),
    ("target.npy", None, "target.npy is missing"),
]


@pytest.mark.parametrize("name, content, words", DAMAGE)
def test_a_damaged_run_is_listed_as_unreadable_and_refuses_every_action(lab_client, name, content, words):
    client, lab = lab_client
    make_run(lab.root, "fine")
    path = make_run(lab.root, "damaged", status="paused")
    if content is None:
        (path / name).unlink()
    elif isinstance(content, bytes):
        (path / name).write_bytes(content)
    else:
        (path / name).write_text(content)

    listing = client.get("/api/runs")
    assert listing.status_code == 200, listing.text
    runs = {run["id"]: run for run in listing.json()["runs"]}
    assert runs["fine"]["status"] == "complete" and runs["fine"]["recipe"]["arch"] == [8]
    damaged = runs["damaged"]
    assert damaged["status"] == "unreadable" and damaged["actions"] == []
    assert words in damaged["message"] and "\n" not in damaged["message"]
    if name == "recipe.json":  # never a plausible recipe made up from the defaults
        assert damaged["recipe"] is None and damaged["describe"] == "unreadable recipe"

    one = client.get("/api/runs/damaged")
    assert one.status_code == 200 and one.json()["run"]["status"] == "unreadable"
    for action, body in (("pause", None), ("stop", None), ("resume", None), ("resume", {"epochs": 50})):
        response = client.post(f"/api/runs/damaged/{action}", json=body)
        assert "cannot" in assert_error(response, 409)["error"]
    assert 400 <= client.get("/api/runs/damaged/neurons?layer=1").status_code < 500
    # Nothing was queued, and reading changed nothing on disk.
    assert client.get("/api/runs/damaged").json()["run"]["status"] == "unreadable"


@pytest.mark.parametrize("name, content", [("target.npy", b"not numpy"), ("target.npy", None),
                                           ("run.json", '{"width": 8}')])
def test_training_again_on_a_damaged_runs_image_is_refused(lab_client, name, content):
    client, lab = lab_client
    path = make_run(lab.root, "source")
    if content is None:
        (path / name).unlink()
    else:
        (path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    before = everything_under(lab.root)
    response = client.post("/api/runs", json={"image": "run:source", "recipe_text": SHORT})
    body = assert_error(response)
    assert 400 <= response.status_code < 500 and body["field"] in ("image", None)
    assert everything_under(lab.root) == before


# -- the server's own failures --------------------------------------------------------


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_a_run_leaves_no_directory(lab_client, monkeypatch):
    client, lab = lab_client
    make_run(lab.root, "before")
    before = everything_under(lab.root)
    monkeypatch.setattr(np, "save", enospc)  # target.npy: the first file a run writes
    response = client.post("/api/runs", json={"image": "astronaut", "size": "16", "recipe_text": SHORT})
    assert "space" in assert_error(response, 507)["error"]
    assert everything_under(lab.root) == before


def test_a_full_disk_at_the_last_file_of_a_run_leaves_no_directory(lab_client, monkeypatch):
    client, lab = lab_client
    before = everything_under(lab.root)
    write_text = Path.write_text

    def full_at_run_json(self, *args, **kwargs):  # target, PNG and recipe are on disk by then
        if ".run.json.tmp-" in self.name:
            enospc()
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_at_run_json)
    response = client.post("/api/runs", json={"image": "astronaut", "size": "16", "recipe_text": SHORT})
    assert_error(response, 507)
    assert everything_under(lab.root) == before
    assert client.get("/api/runs").json()["runs"] == []


@pytest.mark.parametrize("where", ["bytes", "rename"])
def test_a_full_disk_while_uploading_leaves_no_file(lab_client, monkeypatch, where):
    client, lab = lab_client
    uploads = lab.root / store.UPLOADS
    if where == "bytes":
        monkeypatch.setattr(Path, "write_bytes", enospc)
    else:  # the very last step: the description is written, the bytes move into place
        replace = os.replace

        def full_at_rename(src, dst, *args, **kwargs):
            if Path(dst).parent.name == store.UPLOADS and not str(dst).endswith(".json"):
                enospc()
            return replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(store.os, "replace", full_at_rename)
    response = client.post("/api/images", files={"file": ("a.png", png_bytes(), "image/png")})
    assert "space" in assert_error(response, 507)["error"]
    assert everything_under(uploads) == set()
    assert client.get("/api/images").json()["uploads"] == []
    monkeypatch.undo()  # the disk has room again: the same upload succeeds
    assert client.post("/api/images", files={"file": ("a.png", png_bytes(), "image/png")}).status_code == 201


def test_a_runs_folder_the_server_may_not_write_says_what_to_fix(lab_client, monkeypatch):
    client, lab = lab_client

    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    response = client.post("/api/runs", json={"image": "astronaut", "size": "16", "recipe_text": SHORT})
    body = assert_error(response, 500)
    assert "write access" in body["error"] and str(lab.root) in body["error"]


def test_an_unexpected_exception_is_a_json_500_with_the_traceback_only_in_the_log(lab_client, monkeypatch, caplog):
    client, lab = lab_client

    def broken():
        raise RuntimeError("secret detail of the server")

    monkeypatch.setattr(lab, "images", broken)
    with caplog.at_level(logging.ERROR, logger="monalisa.lab.middleware"):
        response = client.get("/api/images")
    body = assert_error(response, 500)
    assert body["error"] == INTERNAL_ERROR and "secret" not in response.text
    logged = [record for record in caplog.records if record.name == "monalisa.lab.middleware"]
    assert len(logged) == 1 and logged[0].exc_info and "secret detail" in str(logged[0].exc_info[1])


# -- bad input against every route ------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A client over a lab with one trained run ("done") and one never trained ("fresh")."""
    root = tmp_path_factory.mktemp("lab") / "runs"
    make_run(root, "fresh", status="paused")
    lab = Lab(root, jobs=1)
    with TestClient(create_app(lab), base_url="http://127.0.0.1:8765") as client:
        response = client.post("/api/runs", json={"image": "astronaut", "size": "16", "recipe_text": SHORT})
        assert response.status_code == 201, response.text
        run_id = response.json()["run"]["id"]
        deadline = time.monotonic() + 90
        while client.get(f"/api/runs/{run_id}").json()["run"]["status"] != "complete":
            assert time.monotonic() < deadline, "the tiny run did not finish in 90 s"
            time.sleep(0.2)
        yield client, run_id


BAD_REQUESTS = [
    # (method, url, keyword arguments, status); {run} is the trained run's id
    ("GET", "/api/nothing-here", {}, 404),
    ("PUT", "/api/runs", {}, 405),
    ("DELETE", "/api/runs/{run}", {}, 405),
    ("GET", "/api/runs/..%2F..%2Fetc", {}, 404),
    ("GET", "/api/runs/a%5Cb", {}, 404),
    ("GET", "/api/runs/a%00b", {}, 404),
    ("GET", "/api/runs/%0A", {}, 404),
    ("GET", "/api/runs/" + "y" * 300, {}, 404),
    ("GET", "/api/runs/a/b/c/d/e/f", {}, 404),
    ("GET", "/api/runs/{run}/neurons?layer=99999999999999999999", {}, 400),
    ("GET", "/api/runs/{run}/neurons?layer=-1", {}, 400),
    ("GET", "/api/runs/{run}/neurons?layer=abc", {}, 400),
    ("GET", "/api/runs/{run}/neurons.png?layer=1e3", {}, 400),
    ("GET", "/api/runs/fresh/neurons", {}, 400),  # no checkpoint yet
    ("GET", "/api/runs/fresh/frame.png", {}, 404),  # no frame yet
    ("POST", "/api/runs/{run}/resume", {"content": b"not json", "headers": {"content-type": "application/json"}}, 400),
    ("POST", "/api/runs/{run}/resume", {"json": [1, 2]}, 400),
    ("POST", "/api/runs/{run}/resume", {"json": {"epochs": "50"}}, 400),
    ("POST", "/api/runs/{run}/resume", {"json": {"epochs": 50.0}}, 400),
    ("POST", "/api/runs/{run}/resume", {"json": {"epochs": True}}, 400),
    ("POST", "/api/runs/{run}/resume", {"json": {"epochs": 1e30}}, 400),
    ("POST", "/api/runs/{run}/resume", {"json": {"epochs": -1}}, 400),
    ("POST", "/api/runs/{run}/resume", {"json": {"epochs": 2}}, 409),  # fewer than it has trained
    ("POST", "/api/runs/{run}/pause", {}, 409),  # complete: nothing to pause
    ("POST", "/api/images", {"files": {"file": ("", png_bytes(), "image/png")}}, 400),  # no file name
    ("POST", "/api/images", {"data": {"other": "x"}}, 400),  # no file part at all
    ("POST", "/api/images", {"files": {"file": ("a.png", b"", "image/png")}}, 400),
    ("GET", "/api/images/nothing/thumbnail.png", {}, 404),
    ("POST", "/api/runs", {"content": b"{", "headers": {"content-type": "application/json"}}, 400),
    ("POST", "/api/runs", {"json": {"image": "run:../../etc"}}, 404),
    ("POST", "/api/runs", {"json": {"image": "astronaut", "size": "-5"}}, 400),
    ("POST", "/api/recipes/check", {"json": {"recipe": {"epochs": 1e30}}}, 400),
    ("GET", "/runs/{run}/../../secret", {}, 404),
    ("GET", "/static/nothing.js", {}, 404),
]


@pytest.mark.parametrize("method, url, kwargs, status", BAD_REQUESTS,
                         ids=[f"{m} {u[:50]}" for m, u, _, _ in BAD_REQUESTS])
def test_bad_requests_get_a_json_4xx_with_one_line(trained, method, url, kwargs, status):
    client, run_id = trained
    response = client.request(method, url.replace("{run}", run_id), **kwargs)
    assert_error(response, status)
