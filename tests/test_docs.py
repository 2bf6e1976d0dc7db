"""What the user docs promise holds: every `monalisa ...` command in README.md and docs/*.md names a
real subcommand and only its real flags (checked against the CLI's own argparse parser, no process
started), every relative link and image points at a file of this repository that exists (and a
heading there, for a #fragment), every repository file they name exists, and the README stays a
guide of at most MAX_README_LINES lines.
"""

from __future__ import annotations

import argparse
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

from monalisa.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # where commands are checked
LINKING = [*PAGES, ROOT / "CHANGELOG.md"]  # where links are checked (the changelog may quote old flags)
MAX_README_LINES = 300

FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`([^`]+)`")
# `monalisa` as a command word: not `monalisa.cli`, `'monalisa[ray]'`, `src/monalisa/`, `monalisa:`.
COMMAND = re.compile(r"(?<![\w.\-/\[])monalisa[ \t]+(?=\S)")
# Where one command ends: a shell separator, a comment, the end of an inline span, or a run of
# three spaces (a synopsis line's description column).
END = re.compile(r"&&|\|\||;|\s#|`|\s{3,}")
FLAG = re.compile(r"--?[A-Za-z][\w-]*")  # a whole word: -h, --epochs, --lr=0.1 (its value dropped)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_REF = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.I)
# A file of the repository named in prose or code, always from the repository's root.
REPO_PATH = re.compile(r"(?<![\w./-])((?:src|tests|benchmarks|docs|examples)/[\w./-]*\w\.(?:py|md|toml|jpg|png|gif))\b")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def subcommand_flags(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Every subcommand's option strings (``--help`` and ``--no-residual`` included); '' holds the top level's."""
    flags = {"": set(parser._option_string_actions)}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                flags[name] = set(sub._option_string_actions)
    return flags


FLAGS = subcommand_flags(build_parser())


def commands_in(text: str) -> list[str]:
    """The `monalisa ...` command lines in a Markdown text, from its code blocks and inline code.

    In a code block a line ending in a backslash, or an indented line after a command's line (a
    synopsis wrapped over two lines), continues that command.
    """
    found = []
    for block in FENCE.finditer(text):
        joined: list[str] = []
        for line in block.group(2).splitlines():
            if joined and (joined[-1].endswith("\\") or (line[:1].isspace() and COMMAND.search(joined[-1]))):
                joined[-1] = joined[-1].rstrip("\\").rstrip() + " " + line.strip()
            else:
                joined.append(line)
        for line in joined:
            found += _commands_on(line)
    prose = FENCE.sub("", text)
    for span in INLINE.finditer(prose):
        found += _commands_on(" ".join(span.group(1).split()))
    return found


def _commands_on(line: str) -> list[str]:
    commands = []
    for match in COMMAND.finditer(line):
        if re.search(r"\b(?:from|import)\s*$", line[:match.start()]):  # Python's `from monalisa import ...`
            continue
        rest = line[match.end():]
        end = END.search(rest)
        commands.append("monalisa " + (rest[:end.start()] if end else rest).strip())
    return commands


def command_errors(command: str, flags: dict[str, set[str]] = FLAGS) -> list[str]:
    """What is wrong with one `monalisa ...` command line: an unknown subcommand or flag; [] if nothing."""
    words = command.split()[1:]
    if not words:
        return [f"{command!r}: no subcommand"]
    if words[0].startswith("-"):
        subcommand, used = "", words
    else:
        subcommand, used = words[0], words[1:]
        if subcommand not in flags:
            return [f"{command!r}: no subcommand {subcommand!r} (there are {', '.join(sorted(set(flags) - {''}))})"]
    where = f"monalisa {subcommand}".strip()
    # Words, not substrings: a path such as runs/<label>-s<seed> holds no flag.
    tokens = (token.split("=")[0] for token in re.split(r"[\s\[\]()|]+", " ".join(used)))
    return [f"{command!r}: {where} has no flag {flag}"
            for flag in tokens if FLAG.fullmatch(flag) and flag not in flags[subcommand]]


def github_slug(heading: str, seen: dict[str, int]) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as '-', repeats numbered."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN").replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    return slug if count == 0 else f"{slug}-{count}"


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    return {github_slug(heading, seen) for heading in HEADING.findall(FENCE.sub("", page.read_text()))}


def link_errors(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link or image of ``page`` that points outside the repository, at no file, or at no heading."""
    root, page = root.resolve(), page.resolve()
    prose = INLINE.sub("", FENCE.sub("", page.read_text()))
    errors = []
    for target in LINK.findall(prose) + HTML_REF.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
            continue
        path_part, _, fragment = unquote(target).partition("#")
        where = (page.parent / path_part).resolve() if path_part else page
        name = f"{page.relative_to(root)}: {target}"
        if not where.is_relative_to(root):
            errors.append(f"{name} leaves the repository (a clone has nothing there)")
        elif not where.exists():
            errors.append(f"{name} points at no file")
        elif fragment and where.suffix == ".md" and fragment not in anchors(where):
            errors.append(f"{name}: {where.name} has no heading #{fragment}")
    return errors


def test_every_documented_command_parses():
    commands = {page.name: commands_in(page.read_text()) for page in PAGES}
    errors = [f"{name}: {error}" for name, found in commands.items() for command in found
              for error in command_errors(command)]
    assert errors == []
    # The extraction found the docs' commands, so the empty list above means something.
    assert len(commands["README.md"]) >= 6
    documented = {command.split()[1] for found in commands.values() for command in found}
    assert set(FLAGS) - {""} <= documented, "every subcommand is documented somewhere"


def test_a_made_up_flag_or_subcommand_is_caught():
    assert command_errors("monalisa train mona_lisa --preset original --epochs 3") == []
    assert command_errors("monalisa train mona_lisa --no-residual --lr=0.1 --out runs/x-s0 [-h]") == []
    assert command_errors("monalisa --version") == []
    assert command_errors("monalisa train mona_lisa --made-up-flag 3") == [
        "'monalisa train mona_lisa --made-up-flag 3': monalisa train has no flag --made-up-flag"]
    # A flag of another subcommand is not one of this one's (--budget is study's and search's).
    assert command_errors("monalisa train --budget 5") != []
    assert command_errors("monalisa trian mona_lisa")[0].startswith("'monalisa trian mona_lisa': no subcommand 'trian'")


def test_commands_are_found_in_blocks_inline_and_wrapped_lines():
    text = "\n".join([
        "Run `monalisa train photo.jpg\n--made-up-a 1` or `monalisa.cli` or `pip install 'monalisa[ray]'`.",
        "```bash",
        "pip install -e . && monalisa serve --open   # then --made-up-comment is only a comment",
        "monalisa compare IMAGE --arch A \\",
        "    --made-up-b",
        "```",
        "```text",
        "monalisa study depth [--quick]",
        "               [--made-up-c]        a description column, --made-up-d ignored",
        "```",
        "```python",
        "from monalisa import fit  # monalisa render RUN --made-up-e",
        "```",
    ])
    found = commands_in(text)
    assert sorted(found) == sorted([
        "monalisa serve --open", "monalisa compare IMAGE --arch A --made-up-b",
        "monalisa study depth [--quick] [--made-up-c]", "monalisa render RUN --made-up-e",
        "monalisa train photo.jpg --made-up-a 1"])
    bad = sorted(re.search(r"--made-up-\w", error).group() for command in found for error in command_errors(command))
    assert bad == ["--made-up-a", "--made-up-b", "--made-up-c", "--made-up-e"]


def test_the_readme_is_a_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    first_block = FENCE.search(README.read_text()).group(2)
    assert "monalisa train" in first_block and "pytest" in first_block, "the two commands come first"


@pytest.mark.parametrize("page", LINKING, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert page.exists()
    assert link_errors(page) == []


def test_named_repository_files_exist():
    """`python benchmarks/epoch_time.py`, `tests/test_online_exact.py`: a file that moved is a stale page."""
    missing = [f"{page.name}: {path}" for page in PAGES for path in REPO_PATH.findall(page.read_text())
               if not (ROOT / path).is_file()]
    assert missing == []
    assert REPO_PATH.findall("run `python benchmarks/gone.py` (docs/zoo.py; ../docs/x.md)") == [
        "benchmarks/gone.py", "docs/zoo.py"]


def test_a_broken_link_is_caught(tmp_path):
    (tmp_path / "there.md").write_text("# A heading, here\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a-heading-here) [gone](missing.png) [bad](there.md#nowhere) "
                    "[out](../elsewhere.md) <img src=\"also-missing.gif\"> [web](https://example.org) "
                    "`[not a link](in-code.md)`\n")
    assert link_errors(page, root=tmp_path) == [
        "page.md: missing.png points at no file",
        "page.md: there.md#nowhere: there.md has no heading #nowhere",
        "page.md: ../elsewhere.md leaves the repository (a clone has nothing there)",
        "page.md: also-missing.gif points at no file",
    ]
