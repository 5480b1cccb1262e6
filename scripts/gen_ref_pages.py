"""Generate one API reference page per public module (mkdocstrings recipe).

Run by mkdocs-gen-files at build time; it writes nothing to disk. A module is
public unless a part of its dotted path starts with an underscore; package
``__init__`` files become the section index pages.
"""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

SRC = Path(__file__).resolve().parent.parent / "src"

nav = mkdocs_gen_files.Nav()  # type: ignore[attr-defined, no-untyped-call]

for path in sorted(SRC.rglob("*.py")):
    module_path = path.relative_to(SRC).with_suffix("")
    parts = tuple(module_path.parts)
    if parts[-1] == "__main__":
        continue
    if parts[-1] == "__init__":
        parts = parts[:-1]
        doc_path = Path(*parts, "index.md")
    else:
        doc_path = module_path.with_suffix(".md")
    if any(part.startswith("_") or part == "migrations" for part in parts):
        continue
    full_doc_path = Path("reference", doc_path)
    nav[parts] = doc_path.as_posix()
    with mkdocs_gen_files.open(full_doc_path, "w") as fd:
        fd.write(f"# `{'.'.join(parts)}`\n\n::: {'.'.join(parts)}\n")
    mkdocs_gen_files.set_edit_path(full_doc_path, path.relative_to(SRC.parent))

with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as nav_file:
    nav_file.writelines(nav.build_literate_nav())
