"""What every analysis command leaves behind: a CSV, a PNG and a short table on stdout.

Rows are plain dicts whose keys are the columns, so a test can compare them to a reference
without parsing anything. Plots use matplotlib's Agg backend: no display is needed, and the
import happens only when a figure is drawn (matplotlib is the ``analysis`` extra).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import CaldError

Row = Mapping[str, Any]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value)


def write_csv(path: Path, rows: Sequence[Row], columns: Sequence[str]) -> Path:
    """Write ``rows`` (missing cells empty) with a header of ``columns``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([_cell(row.get(column)) for column in columns] for row in rows)
    return path


def format_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """A fixed-width text table of ``rows``, floats to four significant digits."""

    def short(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else _cell(value)

    cells = [[short(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


@contextmanager
def figure(path: Path, panels: int = 1, width: float = 6.0) -> Iterator[list[Any]]:
    """A figure of ``panels`` side-by-side axes, saved to ``path`` as PNG when the block ends."""
    try:
        import matplotlib
    except ImportError as error:
        raise CaldError(
            "plots need matplotlib: pip install 'cald-framework[analysis]'"
        ) from error
    matplotlib.use("Agg")
    from matplotlib import pyplot

    fig, axes = pyplot.subplots(1, panels, figsize=(width * panels, 4.2), squeeze=False)
    try:
        yield list(axes[0])
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        pyplot.close(fig)


def progress(iterable: Any, description: str, total: int | None = None) -> Any:
    """A tqdm progress bar on stderr (silent when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, total=total, leave=False, disable=None)
