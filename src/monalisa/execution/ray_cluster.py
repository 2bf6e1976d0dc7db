"""Runs on a Ray cluster: the executor behind `--ray ADDRESS` (executor.py's protocol).

    from monalisa.execution.ray_cluster import RayExecutor
    from monalisa.execution.runner import Runner
    executor = RayExecutor("local")   # or "auto", or "host:6379" to join a cluster
    ends = Runner(jobs=executor.cpus, executor=executor, threads=1).run_all(specs)

Ray is imported only here, and this module only when `--ray` is given (cli.py,
compare.py, search.py import it inside the functions that need it). ``Connection``
starts or joins Ray and checks, before anything is written, that the address
answers and that every node can import this very version of the project.

Each spec runs as one Ray task (``_work``) asking for ``threads`` CPUs, and one GPU
for a cuda spec (or an "auto" one on a cluster that has GPUs). The task calls
worker.execute, the one function that trains a RunSpec anywhere, in a fresh worker
process (``max_calls=1``: one run per process, as the local executor's 'spawn').

How files travel: they do not. A task writes its run directory at ``spec.path``
made absolute on the driver, so every node must see the driver's output folder at
the same path (one machine, or a shared disk such as NFS mounted alike on every
node). That keeps one writer per run (runs/directory.py's lock) and a checkpoint that
survives its node: a node that dies mid-run leaves the run's last epoch on the
shared disk, and the runner resumes it on another node. A task that cannot see its
run's folder says so in its end report (a one-line error), and writes nothing.

Reports and requests go through one small actor on the driver's node (``_Hub``):
a task puts its reports there (waiting for each, so its ``end`` is never lost when
its process exits), and every CONTROL_SECONDS asks whether its run should pause or
stop, which it records as execute's own signal handlers would (interrupts.ask).
A task that can no longer reach the hub (its driver is gone) pauses its run, as a
local worker whose parent died does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import itertools
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from pathlib import Path

from monalisa import __version__, interrupts
from monalisa.engines.cores import usable_cores
from monalisa.errors import UserError
from monalisa.execution.worker import ORPHAN_EXIT_SECONDS, execute

RAY_LOG = "ray.log"  # in a comparison's or search's directory: what Ray, Ray Tune and Optuna said (chatter_to)
MISSING_RAY = "--ray needs Ray, an optional extra: pip install 'monalisa[ray]' (ray[tune] and optuna)"
CONTROL_SECONDS = 0.5  # how often a task asks the hub for a pause or stop: the lag of Ctrl-C on Ray
HUB_SECONDS = 30.0  # the longest a call to the hub may take before the task counts its driver gone
PROBE_SECONDS = 60.0  # the longest the start-up check of the nodes may take (a busy cluster queues nothing: 0 CPUs)
CONNECT_SECONDS = 5.0  # a TCP connect to host:port before Ray's own, which retries for minutes
# Ray binds its servers to the node's IP address, and for "127.0.0.1" it substitutes the machine's
# network address unless this variable is off (ray._private.services.get_node_ip_address): it is
# the only way to keep a local instance, which has no reason to listen on the network, on loopback.
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray(local: bool = False):
    """The ray module, or a UserError that says how to install it. ``local``: this process's node is
    127.0.0.1 (LOOPBACK_VARIABLE)."""
    if local:
        os.environ[LOOPBACK_VARIABLE] = "0"  # read when ray is imported, and by the processes it starts
    try:
        import ray
    except ImportError:
        raise UserError(MISSING_RAY) from None
    if local:  # imported before (a test, a second comparison in this process): its constant was read then
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def check_address(address: str) -> str:
    """UserError unless ``address`` is "local", "auto" or HOST:PORT (with a port that answers)."""
    if address in ("local", "auto"):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--ray {address!r}: give local (a Ray instance on this machine), auto (the cluster "
                        "this machine belongs to) or HOST:PORT of a cluster's head, such as 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise UserError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
                        f"`ray start --head`, or use --ray local") from None
    return address


class Connection:
    """This process's link to Ray: started here (``local``) or joined; closing undoes only what it did."""

    def __init__(self, address: str):
        address = check_address(address)
        # A cluster on loopback (started with --node-ip-address=127.0.0.1, as the tests' is) must be
        # joined from loopback too: a driver that called itself by the machine's network address would
        # wait forever for a node of that address to appear.
        host = address.rpartition(":")[0].strip("[]")
        self.ray = ray = import_ray(local=address == "local" or host in ("127.0.0.1", "localhost", "::1"))
        self.owned = False  # whether close() disconnects: not a connection this process already had
        # What Ray's C++ core wrote while starting or joining (each retry of a connection): a failure is
        # our one line, and a success keeps it here for the output directory's ray.log (chatter_to).
        self.startup_output = ""
        if not ray.is_initialized():
            try:
                with _stderr_aside() as aside:
                    try:
                        self._init(address)
                    finally:
                        aside.seek(0)
                        self.startup_output = aside.read().decode("utf-8", "replace")
            except Exception as exc:  # whatever ray.init raises (ConnectionError, AuthenticationError, ...)
                hint = ""
                if os.environ.get("RAY_AUTH_MODE") != "token":  # Ray sends a token only when asked to
                    hint = ("; a cluster with token authentication (Ray's default) needs RAY_AUTH_MODE=token "
                            "and its token (~/.ray/auth_token or RAY_AUTH_TOKEN), or --ray auto on one of its nodes")
                raise UserError(f"--ray {address}: cannot connect ({_first_line(exc)}){hint}") from None
            self.owned = True
        try:
            self.check_nodes()
        except BaseException:
            self.close()
            raise

    def _init(self, address: str) -> None:
        if address == "local":
            self.ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                          num_cpus=usable_cores(), log_to_driver=False, logging_level="ERROR")
        else:
            self.ray.init(address=address, log_to_driver=False, logging_level="ERROR")

    def nodes(self) -> list[dict]:
        return [node for node in self.ray.nodes() if node.get("Alive")]

    @property
    def cpus(self) -> int:
        """CPUs of the whole cluster."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 0)))

    @property
    def node_cpus(self) -> int:
        """CPUs of the largest node: no task may ask for more, or it would wait forever."""
        return max([int(node["Resources"].get("CPU", 0)) for node in self.nodes()] or [1]) or 1

    @property
    def gpus(self) -> int:
        return int(self.ray.cluster_resources().get("GPU", 0))

    def check_nodes(self) -> None:
        """UserError unless every live node imports this version of monalisa (one tiny task on each)."""
        from ray.exceptions import TaskUnschedulableError
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = self.ray.remote(_probe_function())
        nodes = self.nodes()
        refs = [probe.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)).remote() for node in nodes]

        answered = 0
        for node, ref in zip(nodes, refs):
            try:
                version, problem = self.ray.get(ref, timeout=PROBE_SECONDS)
            except TaskUnschedulableError:  # the node died after nodes() listed it: it runs nothing
                continue
            except Exception as exc:  # a node that cannot start a worker (a broken environment): its error
                raise UserError(f"the Ray cluster cannot run a task ({_first_line(exc)})") from None
            answered += 1
            where = node.get("NodeManagerAddress", "?")
            if problem:
                raise UserError(f"the Ray node at {where} cannot import monalisa ({problem}); install the project "
                                "on every node (pip install 'monalisa[ray]' into the Python that runs Ray)")
            if version != __version__:
                raise UserError(f"the Ray node at {where} has monalisa {version}, this machine {__version__}; "
                                "install the same version on every node")
        if not answered:
            raise UserError("the Ray cluster has no live node to run on")

    def close(self) -> None:
        if self.owned:
            self.owned = False
            self.ray.shutdown()


@contextlib.contextmanager
def _stderr_aside():
    """File descriptor 2 into a temporary file for the block (C++ writes there, past sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as aside:
        os.dup2(aside.fileno(), 2)
        try:
            yield aside
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def chatter_to(path: Path, startup: str = ""):
    """For the block, what Ray, Ray Tune and Optuna say on their own goes into the file ``path`` (appended
    to), after ``startup`` (Connection.startup_output); this process's own lines still reach the terminal.

    Four ways out, each turned to the file: the loggers "ray" (Ray Tune's too) and "optuna"; Python
    warnings (Optuna warns once per step a restored trial reports again: hundreds on a resume); the C++
    core's writes to file descriptor 2 (a dead worker's, a lost connection's), which pass sys.stderr by,
    so descriptor 2 is pointed at the file and sys.stderr at a copy of the old one; and sys.stdout,
    where Ray's driver prints the raylet's errors (ray._private.worker.listen_error_messages prints
    each, such as the paragraph on a killed worker, with print_to_stdstream) whatever log_to_driver
    says. Nothing of ours prints to stdout while a comparison or a search trains: its results come
    after.
    """
    log = open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("ray", "optuna")]
    saved_loggers = [(logger, logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    saved_showwarning, saved_stdout, saved_stderr = warnings.showwarning, sys.stdout, sys.stderr
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        stderr_is_fd_2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test's io.StringIO: it does not reach the fd
        stderr_is_fd_2 = False
    saved_fd = os.dup(2)
    try:
        log.write(startup)
        for logger in loggers:
            logger.handlers, logger.propagate = [handler], False
            # Warnings too: Connection starts Ray at ERROR to keep them off the terminal, and the file is theirs
            logger.setLevel(min(logger.getEffectiveLevel(), logging.WARNING))

        def showwarning(message, category, filename, lineno, file=None, line=None):
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = showwarning
        if stderr_is_fd_2:
            sys.stderr = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding=saved_stderr.encoding,
                                   errors="backslashreplace")
        os.dup2(log.fileno(), 2)
        sys.stdout = log
        yield
    finally:
        sys.stdout = saved_stdout
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        if sys.stderr is not saved_stderr:
            sys.stderr.close()
            sys.stderr = saved_stderr
        warnings.showwarning = saved_showwarning
        for logger, handlers, propagate, level in saved_loggers:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        log.close()


def _probe_function():
    """A function Ray sends by value (it is local to this one), so a node without the project can run it."""
    def probe():
        try:
            importlib.import_module("monalisa.execution.ray_cluster")  # what every task imports first
            return getattr(importlib.import_module("monalisa"), "__version__", "?"), None
        except Exception as exc:  # the reason, for the one line the user gets
            return None, f"{type(exc).__name__}: {exc}"
    return probe


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# -----------------------------------------------------------------------------
# the hub: reports in, pause and stop requests out, on the driver's node


class _Hub:
    """An async actor: many tasks put at once while the driver waits in ``take``."""

    def __init__(self):
        import asyncio

        self.reports = asyncio.Queue()
        self.intents: dict[str, str] = {}

    async def put(self, report: dict) -> None:
        self.reports.put_nowait(report)

    async def take(self, timeout: float, most: int) -> list[dict]:
        import asyncio

        try:
            taken = [await asyncio.wait_for(self.reports.get(), timeout)] if timeout > 0 else []
        except asyncio.TimeoutError:
            return []
        while not self.reports.empty() and len(taken) < most:
            taken.append(self.reports.get_nowait())
        return taken

    async def ask(self, token: str, intent: str) -> None:
        self.intents.setdefault(token, intent)  # the first request counts, as with signals

    async def intent(self, token: str) -> str | None:
        return self.intents.get(token)


class _HubReports:
    """A task's end of the hub, with a queue's ``put``: waits until each report is there."""

    def __init__(self, hub):
        self.hub = hub

    def put(self, report: dict) -> None:
        import ray

        try:
            ray.get(self.hub.put.remote(report), timeout=HUB_SECONDS)
        except Exception:  # the driver is gone: the follower pauses the run
            pass


def _follow(hub, token: str) -> None:
    """In a task: record the hub's pause or stop where execute's safe points look (interrupts.ask);
    pause if the hub is gone."""
    import ray

    while True:
        try:
            intent = ray.get(hub.intent.remote(token), timeout=HUB_SECONDS)
        except Exception:  # the hub (and with it the driver) is gone: pause rather than train unseen
            interrupts.ask(interrupts.PAUSE)
            time.sleep(ORPHAN_EXIT_SECONDS)
            os._exit(0)  # the pause did not land: the run resumes from its last checkpoint
        if intent is not None:
            interrupts.ask(intent)
            return
        time.sleep(CONTROL_SECONDS)


def _work(spec, threads: int, hub, token: str) -> None:
    """One spec, in a Ray worker process of its own: worker.execute with the hub as its reports."""
    reports = _HubReports(hub)
    folder = spec.path.parent
    if not folder.is_dir():  # not a shared disk: writing here would leave the run on this node alone
        reports.put({"type": "end", "id": spec.key, "status": "error",
                     "message": f"the Ray node {socket.gethostname()} cannot see {str(folder)!r}: --ray needs the "
                                "output folder on a disk every node mounts at the same path (docs/ray.md)"})
        return
    threading.Thread(target=_follow, args=(hub, token), daemon=True).start()
    execute(spec, threads, reports)


# -----------------------------------------------------------------------------
# the executor


class RayHandle:
    """One task, as the runner sees it."""

    def __init__(self, ray, ref, hub, token: str):
        self.ray, self.ref, self.hub, self.token = ray, ref, hub, token

    def alive(self) -> bool:
        ready, _ = self.ray.wait([self.ref], timeout=0)
        return not ready

    def pause(self) -> None:
        self.hub.ask.remote(self.token, "pause")

    def stop(self) -> None:
        self.hub.ask.remote(self.token, "stop")

    def kill(self) -> None:
        try:
            self.ray.cancel(self.ref, force=True)
        except Exception:  # already gone
            pass

    def join(self, timeout: float | None = None) -> None:
        self.ray.wait([self.ref], timeout=timeout)

    def describe_exit(self) -> str:
        error = self._error()
        return "its task ended" if error is None else _first_line(error).split(". ")[0]  # Ray's first sentence

    def lost(self) -> bool:
        """Whether the task ended by a fault of the cluster (its node died, its process was killed),
        not by its run: the runner then starts the run again from its checkpoint."""
        from ray.exceptions import RayTaskError, TaskCancelledError

        error = self._error()
        return error is not None and not isinstance(error, (RayTaskError, TaskCancelledError))

    def _error(self) -> BaseException | None:
        if self.alive():
            return None
        try:
            self.ray.get(self.ref, timeout=0)
        except Exception as exc:
            return exc
        return None


class RayExecutor:
    """Each spec a Ray task on whichever node has its CPUs (and GPU); see the module's docstring."""

    def __init__(self, address: str = "local", connection: Connection | None = None):
        self.connection = connection or Connection(address)
        ray = self.ray = self.connection.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()  # the hub lives and dies with the driver's node
        self.hub = ray.remote(_Hub).options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            here, soft=False)).remote()
        # max_retries=0: a task lost with its node is restarted by the runner, from its checkpoint, as a
        # "resume" spec; Ray's own retry would run the original spec again ("start" on a run that exists).
        self._work = ray.remote(max_retries=0, max_calls=1)(_work)
        self._tokens = itertools.count(1)
        self._received: deque[dict] = deque()
        self._lock = threading.Lock()

    @property
    def cpus(self) -> int:
        return self.connection.cpus

    def threads(self, jobs: int) -> int:
        """Each of ``jobs`` runs' share of the cluster's CPUs, at most a node's (more could never start)."""
        return max(1, min(self.connection.node_cpus, self.connection.cpus // jobs))

    def start(self, spec, threads: int) -> RayHandle:
        # The driver's absolute path: a worker's working folder is its own (docs/ray.md: a shared disk).
        spec = dataclasses.replace(spec, path=Path(spec.path).resolve())
        spec.path.parent.mkdir(parents=True, exist_ok=True)  # so a task can tell a shared disk from its own
        token = f"{spec.key}#{next(self._tokens)}"  # a restarted run must not see its last task's stop
        wants_gpu = spec.device == "cuda" or (spec.device == "auto" and self.connection.gpus > 0)
        ref = self._work.options(num_cpus=threads, num_gpus=1 if wants_gpu else 0,
                                 name=f"monalisa-run {spec.key}").remote(spec, threads, self.hub, token)
        return RayHandle(self.ray, ref, self.hub, token)

    def next_report(self, timeout: float) -> dict | None:
        with self._lock:
            if not self._received:
                try:
                    self._received.extend(self.ray.get(self.hub.take.remote(timeout, 1000),
                                                       timeout=timeout + HUB_SECONDS))
                except Exception:  # the hub is gone (Ray shut down under us): nothing more will come
                    time.sleep(max(0.0, timeout))
            return self._received.popleft() if self._received else None

    def close(self) -> None:
        with self._lock:
            if self.hub is None:  # closed already (the runner closes it, and its opener again)
                return
            try:
                self.ray.kill(self.hub)
            except Exception:  # Ray already down
                pass
            self.hub = None
        self.connection.close()


def open_executor(address: str | None) -> RayExecutor | None:
    """A RayExecutor for ``--ray ADDRESS``, None without one (the local processes)."""
    return None if address is None else RayExecutor(address)

