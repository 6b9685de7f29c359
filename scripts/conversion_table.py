"""The README's faithful-conversion tables: how the student's start (mixer init, layer-local
alignment, kept attention layers) carries through training, one run per row.

Each row is one ``python -m cald_framework run SPEC --set ...`` command, run as printed; the
table is built from the runs' ``results.json``. The ``keep-*`` tables first ask
``cald analyze layers`` which layers convert worst, then compare keeping those as attention with
keeping as many layers drawn at random (seeded). Rows whose ``results.json`` already exists are read, not run again.

    python -m scripts.conversion_table --table quickstart|lm|keep-quickstart|keep-lm
"""

from __future__ import annotations

import argparse
import csv
import random
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from scripts.run_table import Row, command, final_metric, run_row


@dataclass(frozen=True)
class Table:
    spec: str
    #: the prefix of every row's ``experiment.name``
    prefix: str
    rows: tuple[Row, ...]


def init_rows(
    modes: tuple[str, ...],
    attention: tuple[str, ...],
    align: tuple[str, ...],
    unaligned: tuple[str, ...] = (),
) -> tuple[Row, ...]:
    """Random init, attention init, attention init + alignment, for each guidance mode;
    ``unaligned`` turns off an alignment the spec itself asks for."""
    rows = []
    for mode in modes:
        guided = (f"guidance.mode={mode}",)
        random_init = ("student.mixer_options.init=random", *unaligned)
        rows += [
            Row(f"random init, {mode}", f"{mode}-random", (*guided, *random_init)),
            Row(f"attention init, {mode}", f"{mode}-attention", (*guided, *attention, *unaligned)),
            Row(
                f"attention init + alignment, {mode}",
                f"{mode}-attention-aligned",
                (*guided, *attention, *align),
            ),
        ]
    return tuple(rows)


QUICKSTART_ATTENTION = ("student.mixer_options.init=attention", "student.mixer_options.projection=pooled")
LM_ATTENTION = ("student.mixer_options.init=attention",)

TABLES = {
    "quickstart": Table(
        "specs/quickstart.toml",
        "qs",
        init_rows(("target", "waypoint"), QUICKSTART_ATTENTION, ("guidance.align_steps=100",)),
    ),
    "lm": Table(
        "specs/cpu/lm-smollm2-mamba.toml",
        "lm",
        init_rows(
            ("trajectory",),
            LM_ATTENTION,
            ("guidance.align_steps=40", "guidance.align_lr=1e-3"),
            unaligned=("guidance.align_steps=0",),
        ),
    ),
}

#: what the keep tables compare: the quickstart's and the LM spec's best configuration
KEEP_BASES = {
    "keep-quickstart": ("specs/quickstart.toml", "qs", TABLES["quickstart"].rows[-1]),
    "keep-lm": ("specs/cpu/lm-smollm2-mamba.toml", "lm", TABLES["lm"].rows[-1]),
}


def ranking(spec: str, overrides: tuple[str, ...], out: str) -> list[int]:
    """Every converted layer, hardest to convert first, as ``cald analyze layers`` ranks them."""
    args = [sys.executable, "-m", "cald_framework", "analyze", "layers", spec, "--out", out]
    for assignment in overrides:
        args += ["--set", assignment]
    print("$", shlex.join(["python", *args[1:]]), flush=True)
    subprocess.run(args, check=True)
    with open(Path(out) / "layers.csv") as handle:
        return [int(row["layer"]) for row in csv.DictReader(handle)]


def keep_table(name: str, keeps: tuple[int, ...]) -> Table:
    """Each count of kept layers chosen by the ranking, against as many drawn at random (seed 0)."""
    spec, prefix, best = KEEP_BASES[name]
    ranked = ranking(spec, best.overrides, f"runs/{name}-layers")
    draw = random.Random(0)
    rows = []
    for keep in keeps:
        for how, chosen in (
            ("ranked", sorted(ranked[:keep])),
            ("random", sorted(draw.sample(ranked, keep))),
        ):
            kept = f"student.keep_attention=[{','.join(map(str, chosen))}]"
            rows.append(
                Row(
                    f"{best.label}, keep {chosen} ({how})",
                    f"{best.name}-keep{keep}-{how}",
                    (*best.overrides, kept),
                )
            )
    return Table(spec, prefix, (best, *rows))


def _cell(metrics: dict | None, metric: str) -> str:
    return "" if not metrics else f"{metrics[metric]:.3f}"


def render(table: Table, results: dict[Row, dict]) -> str:
    first = results[table.rows[0]]
    metric = first["primary_metric"]
    lines = [
        f"| run | {metric}: after conversion | after alignment | best checkpoint | at the end "
        "| alignment + training wall time | command |",
        "|---|---|---|---|---|---|---|",
        f"| teacher | | | {_cell(first['teacher_metrics'], metric)} | | | |",
    ]
    for row in table.rows:
        result = results[row]
        seconds = result["train_wall_seconds"] + (result.get("align_wall_seconds") or 0.0)
        lines.append(
            f"| {row.label} | {_cell(result['initial_student_metrics'], metric)} "
            f"| {_cell(result.get('aligned_student_metrics'), metric)} "
            f"| {_cell(result['student_metrics'], metric)} "
            f"| {final_metric(Path(result['paths']['metrics']), metric):.3f} "
            f"| {seconds:.0f} s | `{shlex.join(command(table.spec, named(table, row)))}` |"
        )
    return "\n".join(lines) + "\n"


def named(table: Table, row: Row) -> Row:
    """``row`` with the table's prefix on its run name."""
    return Row(row.label, f"{table.prefix}-{row.name}", row.overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=[*TABLES, *KEEP_BASES], required=True)
    parser.add_argument(
        "--keep", type=int, nargs="+", default=[1, 2], help="kept-layer counts (keep tables)"
    )
    parser.add_argument("--out", default=None)
    options = parser.parse_args()
    if options.table in TABLES:
        table = TABLES[options.table]
    else:
        table = keep_table(options.table, tuple(options.keep))
    results = {row: run_row(table.spec, named(table, row)) for row in table.rows}
    rendered = render(table, results)
    Path(options.out or f"runs/conversion-{options.table}.md").write_text(rendered)
    print(rendered)


if __name__ == "__main__":
    main()
