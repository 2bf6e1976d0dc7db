"""jobs.py's Lab and the runs it does not own: a run another process writes, a run moved away under
its worker. Through the HTTP API with a test client, as tests/test_lab_api.py does; the other
process is a real one (it takes the run's lock, as a `monalisa train` or a second lab's worker
would), started with a memory cap and killed by its pid in a finally."""

import json
import logging
import os
import resource
import subprocess
import sys
import time

from helpers import snapshot, wait_for

from monalisa import Recipe, load_target, train_run

MEMORY = 4 * 2**30  # the holder imports torch through monalisa: ~2 GiB of address space
ACTIONS = [("pause", None), ("stop", None), ("resume", None), ("resume", {"epochs": 10})]


def disk_run(lab, name="r1", status="running") -> str:
    """A 3-epoch run trained into the lab's root by this process, its run.json saying ``status``
    (a CLI train in progress says 'running')."""
    path = lab.root / name
    train_run(load_target("astronaut", size=(16, 12)), Recipe(arch=(8, 8), epochs=3), path, quiet=True)
    info = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**info, "status": status}))
    return name


def hold_lock(path) -> subprocess.Popen:
    """Another process that locks the run at ``path`` and sleeps (at most two minutes)."""
    code = (f"import time\nfrom monalisa.runs.directory import RunDirectory\nRunDirectory.open({str(path)!r}).lock()\n"
            "print('locked', flush=True)\ntime.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY)))
    assert holder.stdout.readline().strip() == "locked", holder.communicate(timeout=30)
    return holder


def listed(client, run_id) -> dict:
    return next(run for run in client.get("/api/runs").json()["runs"] if run["id"] == run_id)


def test_a_run_another_process_writes_is_shown_running_elsewhere_and_refused(lab_client):
    client, lab = lab_client
    run_id = disk_run(lab)
    holder = hold_lock(lab.root / run_id)
    try:
        before = snapshot(lab.root / run_id)
        run = listed(client, run_id)
        assert run["status"] == "elsewhere", run  # not 'interrupted': somebody is writing it
        assert run["writer_pid"] == holder.pid and f"pid {holder.pid}" in run["message"]
        assert run["actions"] == []
        assert client.get(f"/api/runs/{run_id}").json()["run"]["status"] == "elsewhere"
        for action, body in ACTIONS:
            answer = client.post(f"/api/runs/{run_id}/{action}", json=body)
            assert answer.status_code == 409, (action, answer.text)
            assert set(answer.json()) == {"error", "field"}
            assert f"another process (pid {holder.pid}) is writing this run" in answer.json()["error"]
        assert snapshot(lab.root / run_id) == before  # nothing written, nothing queued
        assert run_id not in lab.runner.waiting() and run_id not in lab.runner.running()
        statuses = client.get("/api/options").json()["statuses"]
        assert statuses["elsewhere"]["actions"] == []
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    # The process is gone (the kernel dropped its lock): the run is what its files say again.
    run = listed(client, run_id)
    assert run["status"] == "interrupted" and run["writer_pid"] is None
    assert run["actions"] == ["resume", "stop"]
    assert client.post(f"/api/runs/{run_id}/resume", json={"epochs": 4}).status_code == 200
    done = wait_for(client, run_id, lambda r: r["status"] in ("complete", "error"))
    assert done["status"] == "complete" and done["epoch"] == 4, done


def test_a_lab_run_moved_away_mid_training_stops_its_worker_in_one_line(lab_client, caplog, capfd):
    client, lab = lab_client
    answer = client.post("/api/runs", json={"image": "astronaut", "size": "16", "preset": "quick",
                                            "recipe_text": 'arch = "2x8"\nepochs = 100000'})
    assert answer.status_code == 201, answer.text
    run_id = answer.json()["run"]["id"]
    wait_for(client, run_id, lambda r: r["status"] == "running" and r["epoch"] >= 3)
    moved = lab.root.parent / "moved"
    with caplog.at_level(logging.WARNING, logger="monalisa.lab.jobs"):
        os.rename(lab.root / run_id, moved)
        deadline = time.monotonic() + 90
        while run_id in lab.runner.running():
            assert time.monotonic() < deadline, "the worker trained on"
            time.sleep(0.1)
        time.sleep(0.5)  # the end report's log line, from the lab's thread
    assert not (lab.root / run_id).exists()  # no ghost at the old path
    assert client.get(f"/api/runs/{run_id}").status_code == 404
    lines = [r.getMessage() for r in caplog.records if "was moved or deleted while it trained" in r.getMessage()]
    assert len(lines) == 1 and run_id in lines[0], caplog.text
    assert "Traceback" not in capfd.readouterr().err  # the worker's stderr: no TensorBoard thread traceback
    assert (moved / "checkpoint.pt").is_file() and json.loads((moved / "run.json").read_text())["status"] == "running"
