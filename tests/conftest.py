"""Fixtures shared by several test files; plain helper functions are in helpers.py.

- `one_thread`: torch on one thread for the test (modules opt in with
  `pytestmark = pytest.mark.usefixtures("one_thread")`);
- `workspace`: tmp_path, with the working directory moved to an empty tmp_path/cwd, where a
  default runs/ folder would appear (CLI test files override it to add their own files);
- `lab_client`: a TestClient over a fresh lab in tmp_path/runs, and the lab (jobs: the module's
  LAB_JOBS, else 2); leaving it closes the lab, so no worker outlives the test.
"""

import pytest
import torch


@pytest.fixture
def one_thread():
    """These are small tensors: a second thread costs more to wake than it saves, and far more
    when another process holds the other core (the 100-step fit: 0.7 s on one thread, 4-18 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """tmp_path; the cwd an empty folder inside it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a default runs/ folder would appear here
    return tmp_path


@pytest.fixture
def lab_client(request, tmp_path):
    # Imported here: most test files never start a lab, and FastAPI costs a second to import.
    from fastapi.testclient import TestClient

    from monalisa.lab.app import create_app
    from monalisa.lab.jobs import Lab

    lab = Lab(tmp_path / "runs", jobs=getattr(request.module, "LAB_JOBS", 2))
    with TestClient(create_app(lab), base_url="http://127.0.0.1:8765") as client:
        yield client, lab
    # leaving the block closed the lab: no worker outlives the test
