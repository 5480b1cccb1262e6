"""The guard cannot be fooled by fences hidden in admonitions or tabs."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.docs.conftest import build_site
from tests.docs.guard import executed_sources, unexecuted_blocks

CONFIG = """\
site_name: guard demo
markdown_extensions:
  - admonition
  - pymdownx.highlight:
      pygments_lang_class: true
  - pymdownx.superfences
  - pymdownx.tabbed:
      alternate_style: true
  - pymdownx.blocks.admonition
"""


def _project(tmp_path: Path, page: str) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(textwrap.dedent(page))
    (tmp_path / "mkdocs.yml").write_text(CONFIG)
    build_site(tmp_path / "mkdocs.yml", tmp_path / "site", strict=False)
    return tmp_path


def _reports(tmp_path: Path, page: str) -> list[str]:
    root = _project(tmp_path, page)
    return unexecuted_blocks(root / "site", executed_sources(root, packages=()))


def test_guard_reports_a_python_fence_inside_a_note_admonition(tmp_path: Path) -> None:
    reports = _reports(
        tmp_path,
        """
        # Demo

        !!! note
            ```python
            assert 1 + 1 == 3
            ```
        """,
    )
    assert len(reports) == 1
    assert "assert 1 + 1 == 3" in reports[0]
    assert "does not collect" in reports[0]


def test_guard_reports_a_python_fence_inside_a_content_tab(tmp_path: Path) -> None:
    reports = _reports(
        tmp_path,
        """
        # Demo

        === "Tab"

            ```python
            hidden = True
            ```
        """,
    )
    assert len(reports) == 1
    assert "hidden = True" in reports[0]


def test_guard_accepts_a_top_level_fence_and_a_blocks_admonition(tmp_path: Path) -> None:
    reports = _reports(
        tmp_path,
        """
        # Demo

        ```python
        shown = 1
        ```

        /// note | Collected
        ```python
        also_shown = 2
        ```
        ///
        """,
    )
    assert reports == []


def test_guard_reports_a_pycon_block_whose_doctest_checks_other_output(tmp_path: Path) -> None:
    # Without a blank line before the closing fence, doctest reads the fence
    # itself as part of the expected output: the block the reader sees is not
    # what the doctest checks, so the guard must not count it as executed.
    reports = _reports(
        tmp_path,
        """
        # Demo

        ```pycon
        >>> 1 + 1
        2
        ```
        """,
    )
    assert len(reports) == 1
    assert "no doctest runs" in reports[0]


def test_guard_reports_a_fence_whose_container_was_not_rendered(tmp_path: Path) -> None:
    # Without pymdownx.tabbed, `===` is plain text and the fence an indented
    # code block: it renders with no language, which the guard refuses.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text('# Demo\n\n=== "Tab"\n\n    x = 1\n')
    (tmp_path / "mkdocs.yml").write_text("site_name: demo\n")
    build_site(tmp_path / "mkdocs.yml", tmp_path / "site", strict=False)
    reports = unexecuted_blocks(tmp_path / "site", executed_sources(tmp_path, packages=()))
    assert len(reports) == 1
    assert "no language" in reports[0]


def test_guard_reports_a_shell_command_hidden_in_an_admonition(tmp_path: Path) -> None:
    reports = _reports(
        tmp_path,
        """
        # Demo

        !!! tip
            ```console
            $ payment-systems --version
            ```
        """,
    )
    assert len(reports) == 1
    assert "shell command(s) no test runs" in reports[0]
