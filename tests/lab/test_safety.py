"""The lab under attack (issue 9): many resumes at once, a run another process writes, a run killed
in its ending. Through the HTTP API with a test client, as tests/test_lab_api.py does."""

import json
import threading

from helpers import wait_for

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
