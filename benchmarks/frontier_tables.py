"""Fill a results page's frontier tables from the report JSONs, so the page's numbers are the JSON's.

A page marks each generated table with a pair of HTML comments naming the `edlm bench` results file (relative to
the repository root):

    <!-- frontier-table: results/frontiers/demo/results.json -->
    ...rendered by edlm.eval.sweep_report.render_matched_table...
    <!-- /frontier-table -->

    python benchmarks/frontier_tables.py docs/studies/frontiers.md          # rewrite the tables in place
    python benchmarks/frontier_tables.py docs/studies/frontiers.md --check  # exit 1 if a table is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from edlm.eval.sweep_report import render_matched_table

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"(<!-- frontier-table: (\S+) -->\n)(.*?)(<!-- /frontier-table -->)", re.S)


def fill(text: str, root: Path = ROOT) -> str:
    """The page with every marked table rendered afresh from the results file its marker names."""

    def render(m: re.Match) -> str:
        rep = json.loads((root / m.group(2)).read_text(encoding="utf-8"))["report"]
        return m.group(1) + "\n" + render_matched_table(rep) + "\n" + m.group(4)

    return _BLOCK.sub(render, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("page")
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 if a table differs from its JSON")
    a = ap.parse_args(argv)
    page = Path(a.page)
    old = page.read_text(encoding="utf-8")
    new = fill(old)
    if a.check:
        if new != old:
            print(f"{page}: a frontier table differs from its results file; run without --check", file=sys.stderr)
            return 1
        return 0
    if new != old:
        page.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
