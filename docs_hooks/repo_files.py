"""MkDocs hook: serve the repository files that the docs link to from outside docs/ (results, scripts).

The pages link to measured results the way GitHub renders them, e.g. `../../results/demo/results.json`
from docs/studies/. MkDocs only knows files under docs/, so strict builds would call those links broken.
This hook finds every relative link or image in the pages that leaves docs/, and adds its target to the
site under `repo/` when the file exists inside the repository; a link to a file that does not exist is
left alone, so `mkdocs build --strict` still fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mkdocs.structure.files import File, InclusionLevel

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def outside_links(markdown: str) -> set[str]:
    """Relative link targets of a page (paths, without anchors), fenced code blocks skipped."""
    found = set()
    for target in _LINK.findall(_FENCE.sub("", markdown)):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path or target.startswith(("/", "#")):
            continue
        found.add(unquote(parts.path))
    return found


class _RepoFile(File):
    """A repository file copied into the site as it is (a results .md is shown raw, not as a page)."""

    def is_documentation_page(self) -> bool:
        return False


def on_files(files, config):
    docs = Path(config.docs_dir).resolve()
    root = Path(config.config_file_path).resolve().parent
    wanted: dict[str, Path] = {}
    for f in files.documentation_pages():
        if f.abs_src_path is None:
            continue
        for link in outside_links(Path(f.abs_src_path).read_text(encoding="utf-8")):
            uri = posixpath.normpath(posixpath.join(posixpath.dirname(f.src_uri), link))
            if not uri.startswith("../"):
                continue
            path = (docs / uri).resolve()
            if path.is_file() and root in path.parents and docs not in path.parents:
                wanted[uri] = path
    for uri, path in sorted(wanted.items()):
        if files.get_file_from_path(uri) is None:
            files.append(_RepoFile(uri, str(docs), config.site_dir, config.use_directory_urls,
                                   dest_uri="repo/" + path.relative_to(root).as_posix(),
                                   inclusion=InclusionLevel.INCLUDED))  # else '..' reads as a hidden path
    return files
