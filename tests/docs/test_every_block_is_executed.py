"""The guard: every Python block on the built site is executed by this suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.conftest import ROOT
from tests.docs.guard import executed_sources, misused_notest, rendered_blocks, unexecuted_blocks


def test_every_python_block_on_the_site_is_executed_by_the_suite(built_site: Path) -> None:
    reports = unexecuted_blocks(built_site, executed_sources(ROOT))
    assert reports == [], "blocks a reader sees but no test runs:\n" + "\n".join(reports)


def test_the_site_has_python_blocks_to_check(built_site: Path) -> None:
    # A guard that finds nothing proves nothing: make sure the parser sees the pages.
    languages = [b.language for b in rendered_blocks(built_site)]
    assert languages.count("python") >= 10
    assert languages.count("pycon") >= 2


def test_notest_is_used_only_for_snippet_includes() -> None:
    assert misused_notest(ROOT / "docs") == []


def test_the_suite_is_configured_to_collect_docs_fences_and_doctests(
    pytestconfig: pytest.Config,
) -> None:
    # The guard trusts these switches; if someone drops one, the guard must fail too.
    assert pytestconfig.option.markdowndocs is True
    assert pytestconfig.option.markdowndocs_syntax == "superfences"
    assert pytestconfig.option.doctestmodules is True
    assert "*.md" in pytestconfig.option.doctestglob
    assert {"docs", "src", "tests"} <= set(pytestconfig.getini("testpaths"))
