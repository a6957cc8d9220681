"""The README and docs/ stay navigable: every relative link and image points to a file that exists, the
README stays short, and user-facing pages do not cite internal tracker numbers. Pure text checks (fast)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_CODE = re.compile(r"(`+).+?\1")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMG = re.compile(r"<img[^>]+src=\"([^\"]+)\"")


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code (links there are examples, not links)."""
    return _CODE.sub("", _FENCE.sub("", text))


def relative_targets(text: str) -> list[str]:
    targets = _LINK.findall(prose(text)) + _IMG.findall(text)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_the_link_finder_sees_links_images_and_skips_code():
    text = "[a](x.md) ![b](img/y.png) [c](https://e.org) [d](#here) `[e](no.md)`\n```\n[f](no2.md)\n```\n"
    assert relative_targets(text) == ["x.md", "img/y.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_exists(page):
    missing = []
    for target in relative_targets(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (page.parent / path).resolve().exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 260, f"README.md has {lines} lines; move detail into docs/ (limit 260)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_tracker_references_in_user_docs(page):
    text = page.read_text(encoding="utf-8")
    found = [m.group(0) for m in re.finditer(r"(?i)\bissues?\b|(?<![\w&/])#\d+\b|\bsessions?\b|\bVMs?\b", text)]
    assert not found, f"{page.relative_to(ROOT)} speaks of {sorted(set(found))}: say what a user sees instead"
