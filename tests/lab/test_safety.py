"""The lab under attack: many resumes at once, a run another process writes, a run killed in its
ending (through the HTTP API with a test client, as tests/test_lab_api.py does); and crafted runs,
asked of a real server process under a memory cap, since what they would cost is the server's memory."""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from helpers import CRAFTS, MEMORY_CAP, craft, wait_for

from monalisa import Recipe, load_target, train_run
from monalisa.lab.jobs import Lab
from monalisa.runs.directory import RunDirectory


def complete_run(lab: Lab, name: str = "r1") -> str:
    train_run(load_target("astronaut", size=(16, 12)), Recipe(arch=(8, 8), epochs=3), lab.root / name, quiet=True)
    return name


def test_thirty_resumes_at_once_queue_the_run_once(lab_client):
    """The attack: 30 parallel POST .../resume {"epochs": 1500} gave two 200s and two workers on one run."""
    client, lab = lab_client
    run_id = complete_run(lab)
    barrier = threading.Barrier(30, timeout=30)
    answers = []

    def post():
        barrier.wait()
        answers.append(client.post(f"/api/runs/{run_id}/resume", json={"epochs": 1500}).status_code)

    threads = [threading.Thread(target=post) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == [200] + [409] * 29
    with lab._lock:
        workers = [r for r in lab.runner.running() if r == run_id]
        waiting = [r for r in lab.runner.waiting() if r == run_id]
    assert len(workers) + len(waiting) == 1
    wait_for(client, run_id, lambda r: r["status"] == "running" and r["epoch"] > 3)
    client.post(f"/api/runs/{run_id}/pause")
    wait_for(client, run_id, lambda r: r["status"] == "paused")


def test_a_run_another_process_writes_is_refused(lab_client):
    client, lab = lab_client
    run_id = complete_run(lab)
    holder = RunDirectory.open(lab.root / run_id).lock()  # a CLI `--resume` of the same run, say
    try:
        refused = client.post(f"/api/runs/{run_id}/resume", json={"epochs": 10})
        assert refused.status_code == 409
        assert "being written by another process" in json.dumps(refused.json())
        assert RunDirectory.open(lab.root / run_id).recipe().epochs == 3  # nothing written
    finally:
        holder.unlock()
    assert client.post(f"/api/runs/{run_id}/resume", json={"epochs": 5}).status_code == 200
    wait_for(client, run_id, lambda r: r["status"] == "complete" and r["epoch"] == 5)


def test_resume_finishes_a_run_killed_in_its_ending(lab_client):
    """Its epochs done, its animations and curves missing, run.json left 'running': resume finishes it."""
    client, lab = lab_client
    run_id = complete_run(lab)
    path = lab.root / run_id
    for name in ("curves.png", "learning.mp4", "final.png"):
        (path / name).unlink()
    info = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**info, "status": "running"}))  # as the killed worker left it
    assert client.get(f"/api/runs/{run_id}").json()["run"]["status"] == "interrupted"
    assert client.post(f"/api/runs/{run_id}/resume").status_code == 200
    done = wait_for(client, run_id, lambda r: r["status"] in ("complete", "error"))
    assert done["status"] == "complete" and done["epoch"] == 3, done
    assert (path / "curves.png").is_file() and (path / "learning.mp4").is_file() and (path / "final.png").is_file()


# -- crafted runs: every view answers 4xx, and the server's memory stays bounded -------------------

# The views that build a network from a run's files, as (path after /api/runs/<id>, what it reads).
VIEWS = ["network", "neurons?layer=1", "neurons.png?layer=1", "column.png?layer=1", "unit.png?layer=1&unit=0",
         "render.png?width=64"]
VIEW_CRAFTS = {  # craft -> (the field the answer names, words its error holds)
    "huge-arch": ("arch", "recipe.json': arch 100000000,8 has over 1,000,000,035 parameters"),
    "oversized-checkpoint": (None, "checkpoint.pt' cannot be read (41,9"),
    "lying-checkpoint": (None, "its zip directory claims"),
}
SERVER_PEAK = 1536 * 2**20  # the lab, torch and a few tiny renders: ~600 MB measured; a crafted size is gigabytes


@pytest.fixture(scope="module")
def crafted_lab(tmp_path_factory):
    """A lab server (`monalisa serve` on 127.0.0.1, in its own process under MEMORY_CAP) over a root of
    crafted runs, one per CRAFTS entry, shared by this section's tests and stopped by its pid:
    (base URL, the server's pid)."""
    base = tmp_path_factory.mktemp("crafted-lab")
    finished = base / "finished"
    train_run(load_target("astronaut", size=(16, 12)), Recipe(arch=(8, 8), epochs=3), finished, quiet=True)
    root = base / "runs"
    for how in CRAFTS:
        shutil.copytree(finished, root / how)
        craft(root / how, how)

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    server = subprocess.Popen([sys.executable, "-m", "monalisa.cli", "serve", "--host", "127.0.0.1", "--port", "0",
                               "--runs", str(root), "--jobs", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=cap)
    try:
        line = server.stdout.readline()  # "monalisa lab at http://127.0.0.1:PORT/ ..."
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"serve printed {line!r}; stderr: {server.stderr.read() if server.poll() is not None else ''}"
        yield match.group(0), server.pid
        assert server.poll() is None, "the server died"
    finally:
        os.kill(server.pid, signal.SIGINT) if server.poll() is None else None
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate(timeout=30)


def ask(url: str, body: dict | None = None) -> tuple[int, dict | bytes]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            data = answer.read()
            status, kind = answer.status, answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        data, status, kind = error.read(), error.code, error.headers.get("Content-Type", "")
    return status, json.loads(data) if kind.startswith("application/json") else data


def peak_memory(pid: int) -> int:
    """The process's peak resident memory, in bytes (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


@pytest.mark.parametrize("how", VIEW_CRAFTS)
def test_every_view_of_a_crafted_run_is_a_4xx_in_bounded_memory(crafted_lab, how):
    url, pid = crafted_lab
    field, words = VIEW_CRAFTS[how]
    for view in VIEWS:
        status, body = ask(f"{url}api/runs/{how}/{view}")
        assert status == 400 and isinstance(body, dict), (view, status, body)
        assert set(body) == {"error", "field"} and body["field"] == field, (view, body)
        assert words in body["error"] and "\n" not in body["error"], (view, body)
    assert peak_memory(pid) < SERVER_PEAK


def test_a_crafted_run_is_listed_unreadable_and_its_target_refused(crafted_lab):
    url, pid = crafted_lab
    status, listed = ask(f"{url}api/runs")
    assert status == 200
    runs = {run["id"]: run for run in listed["runs"]}
    assert runs["huge-arch"]["status"] == "unreadable" and runs["huge-arch"]["actions"] == []
    assert "the limit is 50,000,000" in runs["huge-arch"]["message"]
    assert runs["lying-snapshot"]["status"] == "complete"  # the lab reads no snapshot: nothing to refuse
    # 'Run again' on a run's exact pixels reads its target.npy: the lying header is refused, nothing is made.
    status, body = ask(f"{url}api/runs", {"image": "run:lying-target", "preset": "original"})
    assert status == 409 and body["field"] == "image"
    assert "target.npy' cannot be read" in body["error"] and "(200000, 200000, 3)" in body["error"]
    status, listed = ask(f"{url}api/runs")
    assert len(listed["runs"]) == len(CRAFTS)
    assert peak_memory(pid) < SERVER_PEAK
