"""The built site loads nothing from a third-party host: demos happen on bad wifi."""

from __future__ import annotations

import re
from pathlib import Path

from bs4 import BeautifulSoup, Tag

LOADING_ATTRS = {"script": "src", "img": "src", "iframe": "src", "source": "src", "link": "href"}
# <link> relations that only name a page and never make the browser fetch it
NON_FETCHING_RELS = {"canonical", "alternate", "prev", "next", "author", "license"}
CSS_URL = re.compile(r"""(?:@import\s+|url\()\s*["']?(https?:)?//""")


def _external_loads(site: Path) -> list[str]:
    found = []
    for page in sorted(site.rglob("*.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        for tag_name, attr in LOADING_ATTRS.items():
            for tag in soup.find_all(tag_name):
                if not isinstance(tag, Tag):
                    continue
                rel = set(tag.get("rel") or [])
                if tag_name == "link" and rel and rel <= NON_FETCHING_RELS:
                    continue
                url = str(tag.get(attr) or "")
                if url.startswith(("http://", "https://", "//")):
                    found.append(f"{page.relative_to(site)}: <{tag_name} {attr}={url}>")
    for css in sorted(site.rglob("*.css")):
        if CSS_URL.search(css.read_text(encoding="utf-8", errors="replace")):
            found.append(f"{css.relative_to(site)}: loads a remote URL")
    return found


def test_no_page_loads_a_script_style_font_or_image_from_another_host(built_site: Path) -> None:
    assert _external_loads(built_site) == []


def test_mermaid_is_served_from_the_site_itself(built_site: Path) -> None:
    index = (built_site / "index.html").read_text(encoding="utf-8")
    assert 'src="assets/vendor/mermaid/mermaid.min.js"' in index
    assert (built_site / "assets" / "vendor" / "mermaid" / "mermaid.min.js").stat().st_size > 1e6


def test_the_offline_check_does_catch_a_cdn_script(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="https://unpkg.com/x.js"></script>')
    assert _external_loads(tmp_path) == ["index.html: <script src=https://unpkg.com/x.js>"]
