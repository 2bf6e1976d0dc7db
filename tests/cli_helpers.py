"""Helpers shared by the CLI tests."""

from pathlib import Path


def snapshot(root: Path) -> dict:
    """Every file under root with its bytes, to show that nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("monalisa: error: ")
    return lines[0]
