"""Fixtures shared by several test files; plain helper functions are in helpers.py.

- `one_thread`: torch on one thread for the test (modules opt in with
  `pytestmark = pytest.mark.usefixtures("one_thread")`);
- `workspace`: tmp_path, with the working directory moved to an empty tmp_path/cwd, where a
  default runs/ folder would appear (CLI test files override it to add their own files);
- `lab_client`: a TestClient over a fresh lab in tmp_path/runs, and the lab (jobs: the module's
  LAB_JOBS, else 2); leaving it closes the lab, so no worker outlives the test.
- `ray_cluster`: a Ray cluster of two one-CPU worker nodes and a head of no CPUs on this machine,
  every process bound to 127.0.0.1, for the session (test_ray.py, test_search.py; skipped without
  ray); its processes are stopped at the end by Cluster.shutdown, which kills them by pid.
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


class RayTestCluster:
    """``ray.cluster_utils.Cluster`` and its two worker nodes; ``remove(node)`` kills one, ``refill()`` adds
    fresh ones."""

    def __init__(self):
        from ray.cluster_utils import Cluster

        # The head holds the driver (and the Ray executor's hub) but no CPUs, so two runs at once
        # take one worker node each.
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        self.nodes = [self.add() for _ in range(2)]

    @property
    def address(self) -> str:
        return self.cluster.address

    def add(self):
        return self.cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")

    def node_of(self, pid: int):
        """The worker node whose raylet started process ``pid`` (Ray's workers are its children)."""
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        return next((node for node in self.nodes
                     if parent in [p.process.pid for p in node.all_processes["raylet"]]), None)

    def remove(self, node) -> None:
        """Kill ``node``'s processes outright, as a machine that dies would leave them."""
        self.nodes.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)

    def refill(self) -> None:
        """Back to two worker nodes (from the main thread: adding a node waits on the cluster)."""
        while len(self.nodes) < 2:
            self.nodes.append(self.add())


@pytest.fixture(scope="session")
def ray_cluster():
    pytest.importorskip("ray")
    from monalisa.execution.ray_cluster import import_ray

    import_ray(local=True)  # every node on 127.0.0.1 (ray_cluster.LOOPBACK_VARIABLE)
    cluster = RayTestCluster()
    yield cluster
    cluster.cluster.shutdown()


# Tests live in folders that mirror the package (tests/<package>/test_<module>.py); two folders
# hold tests of the whole: e2e/ (real processes, kills, a run end to end) and browser/ (a real
# Chromium). Their tests are marked by folder, so `-m "not e2e and not browser"` runs the rest.
FOLDER_MARKS = {"e2e": "e2e", "browser": "browser"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = item.path.parent.name
        if folder in FOLDER_MARKS:
            item.add_marker(FOLDER_MARKS[folder])
    # Whole-system tests last: a fresh checkout compiles the online kernel once (numba caches it beside
    # the source), which the unit tests pay without a deadline; a browser test's waits would not cover it.
    items.sort(key=lambda item: item.path.parent.name in FOLDER_MARKS)
