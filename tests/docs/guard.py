"""Find code blocks a reader sees on the built site that no test executes.

The site is the truth of what readers copy, so the guard starts from the
built HTML, not from the markdown: a fence that pytest-markdown-docs skips
(because it sits inside a legacy ``!!! note`` or ``=== "Tab"``) is still on
the page, and is caught here.

Each Python or pycon block must be one of:

* a fence that pytest-markdown-docs collects, found with the plugin's own
  ``extract_fence_tests`` so guard and collector cannot disagree;
* doctest examples (source *and* expected output) found by ``doctest`` in a
  markdown page or in a package docstring;
* the verbatim text of a program under ``snippets/`` (all of which are run);
* a cell of a notebook under ``docs/notebooks/`` (all of which are run);
* on an API page, a "Source code in src/…" listing that is verbatim package
  source, which the unit tests exercise.

Shell blocks (``console``, ``bash``) must show only commands that
``test_console_blocks.py`` runs, or that CI runs (the ``nox`` sessions).

Any other ``<pre>`` with no language at all is reported too: that is what an
indented fence becomes when its container syntax is not rendered.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
from bs4 import BeautifulSoup, Tag
from markdown_it import MarkdownIt
from pytest_markdown_docs.plugin import FenceSyntax, extract_fence_tests

from tests.docs.console import SHELL_LANGS, commands_in_docs, commands_in_text

PYTHON_LANGS = {"python", "py", "python3", "pycon"}
SKIPPED_ANCESTOR_CLASSES = {"linenos", "jp-OutputArea-output", "jp-RenderedText"}


@dataclass(frozen=True)
class RenderedBlock:
    """One code block as a reader sees it on a built page."""

    page: str
    language: str | None
    text: str
    title: str | None = None
    source_file: str | None = None  # set for mkdocstrings "Source code in ..." listings
    notebook: bool = False

    def describe(self) -> str:
        first = next((line for line in self.text.splitlines() if line.strip()), "")
        lang = self.language or "no language"
        return f"{self.page}: [{lang}] {first.strip()[:80]!r}"


@dataclass
class ExecutedSources:
    """Everything the test suite executes, indexed for lookup."""

    fences: set[str] = field(default_factory=set)
    doctest_examples: set[tuple[str, str]] = field(default_factory=set)
    snippets: dict[str, str] = field(default_factory=dict)  # text -> path
    notebook_cells: set[str] = field(default_factory=set)
    package_sources: dict[str, str] = field(default_factory=dict)  # "src/x.py" -> text
    shell_commands: set[str] = field(default_factory=set)


def _norm(text: str) -> str:
    """Compare code modulo trailing whitespace and surrounding blank lines."""
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip("\n")


def _flat(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines())


# -- what the site shows -----------------------------------------------------


def _classes(tag: Tag) -> list[str]:
    value = tag.get("class") or []
    return list(value) if isinstance(value, list) else str(value).split()


def _language_of(pre: Tag) -> tuple[str | None, Tag | None]:
    for parent in pre.parents:
        if not isinstance(parent, Tag):
            continue
        for cls in _classes(parent):
            if cls.startswith("language-"):
                return cls.removeprefix("language-"), parent
            if cls.startswith("hl-") and "highlight-ipynb" in _classes(parent):
                return cls.removeprefix("hl-"), parent
    return None, None


def rendered_blocks(site_dir: Path) -> Iterator[RenderedBlock]:
    """Every ``<pre>`` on every page of a built site, with its language."""
    for html_path in sorted(site_dir.rglob("*.html")):
        page = html_path.relative_to(site_dir).as_posix()
        soup = BeautifulSoup(html_path.read_text(encoding="utf-8"), "html.parser")
        for pre in soup.find_all("pre"):
            if "mermaid" in _classes(pre):
                continue
            ancestors = [p for p in pre.parents if isinstance(p, Tag)]
            if any(SKIPPED_ANCESTOR_CLASSES & set(_classes(p)) for p in ancestors):
                continue
            language, container = _language_of(pre)
            title = None
            if container is not None:
                name = container.find("span", class_="filename")
                title = name.get_text() if isinstance(name, Tag) else None
            source_file = None
            details = pre.find_parent("details", class_="mkdocstrings-source")
            if isinstance(details, Tag):
                summary = details.find("summary")
                code = summary.find("code") if isinstance(summary, Tag) else None
                source_file = code.get_text() if isinstance(code, Tag) else None
            notebook = container is not None and "highlight-ipynb" in _classes(container)
            yield RenderedBlock(
                page, language, pre.get_text(), title, source_file, notebook=notebook
            )


# -- what the tests execute ----------------------------------------------------


def collected_fences(docs_dir: Path) -> set[str]:
    """Bodies of the fences pytest-markdown-docs collects (and so runs) under docs/."""
    parser = MarkdownIt("commonmark")
    bodies: set[str] = set()
    for md in sorted(docs_dir.rglob("*.md")):
        for test in extract_fence_tests(
            parser,
            md.read_text(encoding="utf-8"),
            start_line_offset=0,
            source_path=md,
            fence_syntax=FenceSyntax.superfences,
        ):
            # The plugin prefixes continuation blocks with the earlier ones,
            # padded to the fence's line number; the block itself follows.
            own = "\n".join(test.source.split("\n")[test.start_line :])
            bodies.add(_norm(own))
    return bodies


def _examples(text: str, name: str) -> set[tuple[str, str]]:
    parsed = doctest.DocTestParser().get_examples(text, name)
    return {(_norm(e.source), _norm(e.want)) for e in parsed}


def doctest_examples(docs_dir: Path, packages: Iterable[str]) -> set[tuple[str, str]]:
    """Examples run by ``--doctest-glob=*.md`` and ``--doctest-modules``."""
    found: set[tuple[str, str]] = set()
    for md in sorted(docs_dir.rglob("*.md")):
        found |= _examples(md.read_text(encoding="utf-8"), str(md))
    finder = doctest.DocTestFinder()
    for package in packages:
        root = importlib.import_module(package)
        modules = [root]
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            # migrations run on import (Alembic's env.py) and are not documented
            if not info.name.endswith("__main__") and ".migrations" not in info.name:
                modules.append(importlib.import_module(info.name))
        for module in modules:
            for test in finder.find(module):
                found |= {(_norm(e.source), _norm(e.want)) for e in test.examples}
    return found


def notebook_cells(notebooks_dir: Path) -> set[str]:
    """Code cells of the jupytext notebooks (all run by tests/docs/test_notebooks.py)."""
    cells: set[str] = set()
    for path in sorted(notebooks_dir.glob("*.py")):
        notebook = jupytext.read(path)
        cells |= {_norm(c.source) for c in notebook.cells if c.cell_type == "code"}
    return cells


def executed_sources(root: Path, packages: Iterable[str] = ("payment_systems",)) -> ExecutedSources:
    """Index everything the suite executes for a project rooted at ``root``."""
    docs = root / "docs"
    sources = ExecutedSources(
        fences=collected_fences(docs),
        doctest_examples=doctest_examples(docs, packages),
        notebook_cells=notebook_cells(docs / "notebooks"),
        shell_commands={c.command for c in commands_in_docs(docs)},
    )
    for snippet in sorted((root / "snippets").glob("*.py")):
        rel = snippet.relative_to(root).as_posix()
        sources.snippets[_norm(snippet.read_text(encoding="utf-8"))] = rel
    for module in sorted((root / "src").rglob("*.py")):
        sources.package_sources[module.relative_to(root).as_posix()] = module.read_text()
    return sources


# -- the verdict -------------------------------------------------------------


def why_not_executed(block: RenderedBlock, sources: ExecutedSources) -> str | None:
    """None if some test executes ``block``; otherwise the reason it fails the guard."""
    if block.language is None:
        return "a code block with no language: an indented fence whose container did not render?"
    if block.language in SHELL_LANGS:
        shown = [cmd for cmd, _ in commands_in_text(block.text, block.language)]
        missing = [cmd for cmd in shown if cmd not in sources.shell_commands]
        return f"shell command(s) no test runs: {missing}" if missing else None
    if block.language not in PYTHON_LANGS:
        return None
    text = _norm(block.text)
    if block.source_file is not None:
        # mkdocstrings dedents methods, so compare line by line without indentation.
        module = _flat(sources.package_sources.get(block.source_file, ""))
        return None if text and _flat(text) in module else "source listing not found in src/"
    if block.notebook:
        return None if text in sources.notebook_cells else "notebook cell not in docs/notebooks/"
    if block.title and block.title.startswith("snippets/"):
        if sources.snippets.get(text) == block.title:
            return None
        return f"titled {block.title} but its text is not that tested snippet file"
    if block.language == "pycon" or text.startswith(">>>"):
        examples = _examples(block.text, block.page)
        if examples and examples <= sources.doctest_examples:
            return None
        return "pycon block whose examples no doctest runs"
    if text in sources.fences:
        return None
    return "python block that pytest-markdown-docs does not collect (hidden in !!! or ===?)"


def unexecuted_blocks(site_dir: Path, sources: ExecutedSources) -> list[str]:
    """Human-readable reports, one per offending block; empty means all is well."""
    reports = []
    for block in rendered_blocks(site_dir):
        reason = why_not_executed(block, sources)
        if reason:
            reports.append(f"{block.describe()}: {reason}")
    return reports


NOTEST_INCLUDE = re.compile(r'^--8<-- "(snippets/[\w./-]+\.py)"$')


def misused_notest(docs_dir: Path) -> list[str]:
    """``notest`` fences whose body is anything but one snippet include."""
    problems = []
    parser = MarkdownIt("commonmark")
    for md in sorted(docs_dir.rglob("*.md")):
        for token in parser.parse(md.read_text(encoding="utf-8")):
            if token.type != "fence" or "notest" not in token.info:
                continue
            body = token.content.strip()
            if not NOTEST_INCLUDE.match(body):
                line = (token.map or [0])[0] + 1
                problems.append(f"{md}:{line}: notest is only for snippet includes, got {body!r}")
    return problems
