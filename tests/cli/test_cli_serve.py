"""`monalisa serve`'s mistakes: one line, exit 2, before anything listens or is written."""

import socket

import pytest
from helpers import assert_one_line_error

from monalisa.cli import main


def serve_error(argv, capsys) -> str:
    assert main(["serve", *argv]) == 2
    return assert_one_line_error(capsys.readouterr().err)


def test_a_port_in_use_is_one_line(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = serve_error(["--port", str(port), "--runs", str(tmp_path / "runs")], capsys)
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_bad_port_is_one_line(port, capsys):
    assert "--port" in serve_error(["--port", port], capsys)


def test_runs_that_is_a_file_is_one_line(tmp_path, capsys):
    file = tmp_path / "runs"
    file.write_text("not a directory")
    assert "is a file; give a directory" in serve_error(["--port", "0", "--runs", str(file)], capsys)
    assert file.read_text() == "not a directory"


def test_runs_that_cannot_be_created_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = serve_error(["--port", "0", "--runs", str(blocker / "runs")], capsys)
    assert "cannot create --runs" in line


def test_an_unknown_host_is_one_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    line = serve_error(["--host", "no-such-host.invalid", "--port", "0", "--runs", str(runs)], capsys)
    assert "cannot listen on" in line
    assert not runs.exists()  # nothing written


def test_zero_jobs_is_one_line(tmp_path, capsys):
    assert "--jobs" in serve_error(["--jobs", "0", "--runs", str(tmp_path / "runs")], capsys)
