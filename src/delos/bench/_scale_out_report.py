"""The figures block of ``docs/scale-out.md``, refreshed from the scale-out suite's result.

That page is written by hand around one generated block, between :data:`FIGURES_START` (or an
older ``<!-- figures: ... -->`` start marker) and :data:`FIGURES_END`; the rest is left as it is.
A page without the block is not touched.
"""

from __future__ import annotations

import re
from pathlib import Path

from delos.bench._results import SuiteResult, Table

__all__ = ["FIGURES_END", "FIGURES_START", "refresh_figures", "render_figures"]

FIGURES_START = "<!-- figures: python -m delos.bench scale-out -->"
FIGURES_END = "<!-- /figures -->"
_BLOCK = re.compile(r"<!-- figures: [^>]*-->.*?" + re.escape(FIGURES_END), re.DOTALL)


def _section(table: Table) -> str:
    lines = [f"### {table.title}", "", table.note, "", "| " + " | ".join(table.columns) + " |"]
    lines.append("|" + "---|" * len(table.columns))
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_figures(result: SuiteResult, *, command: str, date: str) -> str:
    """The block, markers included."""
    return "\n\n".join(
        [
            FIGURES_START,
            f"Measured on {date} by `{command}` ({result.seconds:.0f} s). {result.method}",
            *(_section(table) for table in result.tables),
            FIGURES_END,
        ]
    )


def refresh_figures(path: Path, result: SuiteResult, *, command: str, date: str) -> bool:
    """Replace the figures block of ``path``; False (and nothing written) when it has none."""
    if not path.exists():
        return False
    text = path.read_text()
    if _BLOCK.search(text) is None:
        return False
    figures = render_figures(result, command=command, date=date)
    path.write_text(_BLOCK.sub(lambda _: figures, text, count=1))
    return True
