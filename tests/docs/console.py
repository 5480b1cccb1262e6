"""Shell blocks on the site: which commands they show, and who runs each one.

A ``console`` block is a transcript: lines starting with ``$ `` are commands,
the lines after a command are its expected output. Commands of this
package's CLI and snippet programs are run by ``test_console_blocks.py``;
``nox``/``pip`` set-up commands are run by CI itself (``.ci/run``), and the
test checks that CI really runs every session a page tells readers to run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

SHELL_LANGS = {"console", "bash", "sh", "shell", "shell-session"}
NOX_COMMAND = re.compile(r"^(?:python3 -m pip install nox && )?nox((?: -s \w+(?: \w+)*)+)$")


@dataclass(frozen=True)
class Command:
    """One command shown on a page, and the output the page says it prints."""

    source: str
    line: int
    command: str
    expected_output: str


def commands_in_text(text: str, language: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of one shell block."""
    if language != "console":
        # a bash block has no prompts: every non-comment line is a command
        return [(ln.strip(), "") for ln in text.splitlines() if ln.strip() and ln[0] != "#"]
    pairs: list[tuple[str, list[str]]] = []
    for ln in text.splitlines():
        if ln.startswith("$ "):
            pairs.append((ln[2:].strip(), []))
        elif pairs:
            pairs[-1][1].append(ln)
    return [(cmd, "\n".join(out).strip()) for cmd, out in pairs]


def commands_in_docs(docs_dir: Path) -> list[Command]:
    """Every command in top-level shell fences of the markdown sources."""
    parser = MarkdownIt("commonmark")
    found = []
    for md in sorted(docs_dir.rglob("*.md")):
        for token in parser.parse(md.read_text(encoding="utf-8")):
            lang = token.info.strip().strip("{}.").split()[0] if token.info.strip() else ""
            if token.type == "fence" and lang in SHELL_LANGS:
                line = (token.map or [0])[0] + 1
                for cmd, out in commands_in_text(token.content, lang):
                    found.append(Command(f"{md.name}:{line}", line, cmd, out))
    return found


def sessions_ci_runs(ci_script: Path) -> set[str]:
    """The nox sessions named on .ci/run's nox line."""
    sessions: set[str] = set()
    for ln in ci_script.read_text().splitlines():
        if ln.strip().startswith("#") or "nox" not in ln or " -s " not in ln:
            continue
        sessions |= set(ln.split(" -s ", 1)[1].split())
    return sessions


def nox_sessions(command: str) -> set[str] | None:
    """Sessions a set-up command runs, or None if it is not a nox command."""
    match = NOX_COMMAND.match(command)
    if match is None:
        return None
    return {s for part in match.group(1).split(" -s ") for s in part.split() if s}
