"""What ``analyze drift``, ``analyze trajectory``, ``analyze layers`` and ``bench`` do with
their parsed arguments.

Each handler returns the exit code and writes a CSV and a PNG into ``--out``, printing a
short table. :mod:`.cli` imports this module only when a command runs, so that building the
parser stays free of torch and the models.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..conversion import convert
from ..errors import CaldError
from ..modeling import CaldModel
from .bench import DEFAULT_LENGTHS, plot_scaling, scaling, side_by_side, summarise
from .drift import drift, plot_drift
from .layers import DEFAULT_STEPS, keep_line, rank_layers
from .measure import positions, synthetic_inputs
from .output import format_table, write_csv
from .overhead import guidance_overhead
from ..spec import load_spec
from .runs import RunDirectory, checkpoint_dir, snapshots_at
from .snapshots import Snapshot
from .trajectory import plot_trajectory, trajectory


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CaldError("--device cuda: no CUDA device is available")
    return torch.device(name)


def _report(rows: Sequence[dict[str, Any]], columns: Sequence[str], csv: Path, png: Path) -> None:
    print(format_table(rows, columns))
    print(f"wrote {csv} and {png}")


# ---------------------------------------------------------------------- analyze drift


def drift_command(args: argparse.Namespace) -> int:
    path = Path(args.path)
    run = RunDirectory.open(path, _device(args.device), Path(args.spec) if args.spec else None)
    snapshots = snapshots_at(run, path)
    batches = run.samples(args.samples, args.seed, args.batch_size)
    rows = drift(run.source_model, snapshots, batches)
    out = Path(args.out)
    csv = write_csv(out / "drift.csv", rows, list(rows[0]))
    png = plot_drift(rows, out / "drift.png")
    _report(rows, list(rows[0]), csv, png)
    return 0


# ---------------------------------------------------------------------- analyze trajectory


def _trajectory_snapshots(runs: Sequence[tuple[RunDirectory, Path]]) -> list[Snapshot]:
    """The pretrained model, each run's checkpoints, and each distinct teacher's waypoints."""
    first = runs[0][0]
    found = [Snapshot("pretrained", 0, lambda: first.source_model)]
    teachers: dict[Path, RunDirectory] = {}
    for run, path in runs:
        found += run.checkpoints(checkpoint_dir(path))
        for directory in run.teacher_waypoint_dirs():
            teachers.setdefault(directory.resolve(), run)
    for directory, run in teachers.items():
        found += run.waypoints(directory)
    return found


def trajectory_command(args: argparse.Namespace) -> int:
    device = _device(args.device)
    runs = [(RunDirectory.open(Path(path), device), Path(path)) for path in args.runs]
    batches = runs[0][0].samples(args.samples, args.seed, args.batch_size)
    rows = trajectory(_trajectory_snapshots(runs), batches, seed=args.seed)
    out = Path(args.out)
    csv = write_csv(out / "trajectory.csv", rows, ["run", "step", "x", "y"])
    png = plot_trajectory(rows, out / "trajectory.png")
    _report(rows, ["run", "step", "x", "y"], csv, png)
    return 0


# ---------------------------------------------------------------------- analyze layers


def layers_command(args: argparse.Namespace) -> int:
    path = Path(args.spec)
    run = RunDirectory(load_spec(path, args.set), path.parent, _device(args.device))
    configured = run.validated.spec.guidance.align_steps or DEFAULT_STEPS
    steps = configured if args.steps is None else args.steps
    if steps < 0 or args.keep < 0:
        raise CaldError(f"--steps and --keep must be 0 or more, got {steps} and {args.keep}")
    held_out = run.samples(args.samples, args.seed, args.batch_size)
    rows = rank_layers(run.context, held_out, steps=steps, device=run.device)
    if args.keep > len(rows):
        raise CaldError(f"--keep {args.keep}: the student has only {len(rows)} converted layers")
    csv = write_csv(Path(args.out) / "layers.csv", rows, ["rank", "layer", "residual"])
    print(format_table(rows, ["rank", "layer", "residual"]))
    print(f"wrote {csv}")
    print(keep_line(rows, args.keep))
    return 0


# ---------------------------------------------------------------------- bench


def _lengths(text: str | None, modality: str) -> list[float]:
    if text is None:
        return list(DEFAULT_LENGTHS[modality])
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CaldError(f"--lengths must be comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise CaldError(f"--lengths must be positive numbers, got {text!r}")
    return [int(value) if value.is_integer() else value for value in values]


def _pair(target: Path, device: torch.device, lengths: str | None) -> tuple[Any, ...]:
    """``(scenario, teacher, student, lengths, run or None)`` for a spec or a saved student.

    A spec's teacher is its source model (weights as the spec names them) and its student a
    fresh conversion sized for the longest length. A saved student is timed against a teacher
    with random weights rebuilt from the student's own source config: timing does not depend
    on the weights.
    """
    if target.is_file():
        run = RunDirectory.open(target, device, target)
        teacher = copy.deepcopy(run.source_model)
        modality = teacher.family.modality
        chosen = _lengths(lengths, modality)
        longest = positions(teacher, synthetic_inputs(teacher, max(chosen), 1))
        _extend(teacher, longest, "teacher")
        validated = run.validated
        student, _ = convert(
            teacher, validated.mixer, validated.mixer_options, longest,
            keep_attention=validated.spec.student.keep_attention,
        )
        return run.name, teacher, student, chosen, run
    if not target.is_dir():
        raise CaldError(f"{target}: no such spec file or model directory")
    student = CaldModel.from_pretrained(target).to(device)
    if student.config.mixer is None:
        raise CaldError(f"{target} holds a model without mixers; pass a student or a spec")
    teacher = CaldModel.from_source_config(
        student.config.source, student.config.source_config, student.head_spec
    ).to(device).eval()
    chosen = _lengths(lengths, teacher.family.modality)
    longest = positions(teacher, synthetic_inputs(teacher, max(chosen), 1))
    _extend(teacher, longest, "teacher")
    _extend(student, longest, "student")
    return f"{target.parent.name}/{target.name}", teacher, student, chosen, None


def _extend(model: CaldModel, length: int, role: str) -> None:
    if model.family.extend_positions(model.backbone, length):
        print(
            f"note: the {role}'s position table was extended to {length} positions with random "
            "rows (outputs past its trained length are meaningless; timing is not affected)"
        )


def _summary_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    scenarios = dict.fromkeys(row["scenario"] for row in rows)
    return [
        {"scenario": scenario, **summarise([row for row in rows if row["scenario"] == scenario])}
        for scenario in scenarios
    ]


def bench_command(args: argparse.Namespace) -> int:
    device = _device(args.device)
    if args.clock == "cpu":
        torch.set_num_threads(1)
        print("note: times are CPU seconds of one thread (torch set to 1 thread)")
    rows: list[dict[str, Any]] = []
    overhead: list[dict[str, Any]] = []
    units = set()
    for target in args.targets:
        scenario, teacher, student, lengths, run = _pair(Path(target), device, args.lengths)
        units.add("seconds" if teacher.family.modality == "audio" else "tokens")
        models = {"teacher": teacher, "student": student}
        rows += scaling(
            models, lengths, batch=args.batch, repeats=args.repeats,
            max_seconds=args.max_seconds, scenario=scenario, clock=args.clock,
        )
        if run is not None and args.overhead_steps > 0:
            context = run.context
            overhead += [
                {"scenario": scenario, **row}
                for row in guidance_overhead(
                    student, teacher, context.task, context.data,
                    run.training_batch(args.overhead_batch),
                    training=context.spec.training,
                    loss=context.loss,
                    extractor=context.extractor(),
                    steps=args.overhead_steps, update_every=args.update_every, clock=args.clock,
                )
            ]
    out = Path(args.out)
    table = side_by_side(rows)
    csv = write_csv(out / "bench.csv", table, list(table[0]))
    png = plot_scaling(rows, out / "bench.png", " or ".join(sorted(units)))
    _report(table, list(table[0]), csv, png)
    summary = _summary_rows(rows)
    print(format_table(summary, list(summary[0])))
    write_csv(out / "bench_summary.csv", summary, list(summary[0]))
    if overhead:
        print(format_table(overhead, list(overhead[0])))
        write_csv(out / "bench_overhead.csv", overhead, list(overhead[0]))
    return 0
