"""serve(): the lab on a local address until Ctrl-C; the API behind `monalisa serve`.

The socket is bound here, before uvicorn starts, so a taken port is one clear
line (not a server log) and ``--port 0`` picks a free port whose address is
printed: tests and scripts read it from the first line of output.
"""

from __future__ import annotations

import errno
import socket
import sys
import threading
import webbrowser
from pathlib import Path

from monalisa.errors import UserError


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use (another monalisa serve?); choose one with --port")
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(False)  # the training workers must not hold the server's socket
    return sock


def serve(runs: str | Path = "runs", host: str = "127.0.0.1", port: int = 8765, jobs: int = 2,
          open_browser: bool = False) -> None:
    """Serve the lab on host:port, training at most ``jobs`` runs at once, keeping them under ``runs``."""
    import uvicorn

    from monalisa.lab.app import create_app
    from monalisa.lab.jobs import Lab
    from monalisa.lab.middleware import LOOPBACK_NAMES

    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    root = Path(runs)
    if root.exists() and not root.is_dir():
        raise UserError(f"--runs {str(root)!r} is a file; give a directory")
    sock = bind(host, port)  # first: a taken port or a bad host leaves nothing behind
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot create --runs {str(root)!r}: {exc.strerror}") from None
    address = sock.getsockname()
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    url = f"http://{shown}:{address[1]}/"
    lab = Lab(root, jobs=jobs)
    # Only names of this machine reach a loopback lab (see app._Guard); any name reaches a public one.
    app = create_app(lab, allowed_hosts=LOOPBACK_NAMES if host in LOOPBACK_NAMES else ("*",))
    print(f"monalisa lab at {url}  (runs in {root}/, {jobs} at a time; Ctrl-C stops it, runs stay resumable)",
          flush=True)
    if host not in LOOPBACK_NAMES:
        print(f"monalisa: warning: listening on {host}: anyone who can reach this address can start runs "
              "and upload images", file=sys.stderr, flush=True)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
