"""Check the internal links of the built HTML site; no network needed.

    python docs/check_links.py docs/_build/html

Every ``href``/``src`` without a scheme must name a file of the build, and its
``#fragment`` an ``id`` (or ``name``) in that file.  Scripts, stylesheets and
images must be local too (the site renders its math with the vendored MathJax,
offline); links to ``http(s)``/``mailto`` pages are listed but not followed.
Exits 1 and prints one line per broken link.
"""
from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

_ATTRS = {"a": "href", "link": "href", "script": "src", "img": "src", "iframe": "src",
          "source": "src"}
# resources a page loads by itself: these must never come from the network
_LOADED = {"link", "script", "img", "iframe", "source"}


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        attr = _ATTRS.get(tag)
        if attr and a.get(attr):
            if tag == "link" and a.get("rel") in ("canonical", "alternate"):
                return
            self.links.append((tag, a[attr]))


def check(root: Path) -> tuple[list[str], int, list[str]]:
    """``(problems, internal links checked, external urls)`` for the site under ``root``."""
    root = root.resolve()
    pages: dict[Path, _Page] = {}

    def page(path: Path) -> _Page:
        if path not in pages:
            p = _Page()
            p.feed(path.read_text(encoding="utf-8", errors="replace"))
            pages[path] = p
        return pages[path]

    problems, external, n = [], [], 0
    for html in sorted(root.rglob("*.html")):
        for tag, url in page(html).links:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                if tag in _LOADED and parts.scheme in ("http", "https", ""):
                    problems.append(f"{html.relative_to(root)}: <{tag}> loads {url} from the network")
                elif parts.scheme in ("http", "https"):
                    external.append(url)
                continue
            n += 1
            target = html if not parts.path else (html.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if root not in target.parents and target != root:
                problems.append(f"{html.relative_to(root)}: {url} points outside the site")
                continue
            if not target.exists():
                problems.append(f"{html.relative_to(root)}: {url}: no such file")
                continue
            frag = unquote(parts.fragment)
            if frag and target.suffix == ".html" and frag not in page(target).ids:
                problems.append(f"{html.relative_to(root)}: {url}: no id {frag!r} in "
                                f"{target.relative_to(root)}")
    return problems, n, sorted(set(external))


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "docs/_build/html")
    if not (root / "index.html").exists():
        print(f"check_links: {root}/index.html not found; build the site first", file=sys.stderr)
        return 2
    problems, n, external = check(root)
    for p in problems:
        print(p)
    print(f"check_links: {n} internal links checked, {len(problems)} broken; "
          f"{len(external)} external urls not followed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
