"""The ``analyze drift``, ``analyze trajectory``, ``analyze layers`` and ``bench`` subcommands.

:func:`add_analysis_commands` adds them to the main parser's subcommands. Their handlers take
the parsed arguments and return the exit code, like the other commands of
:mod:`cald_framework.cli`; the work is in :mod:`.commands`, imported only when one runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


#: the sample choice of ``analyze`` commands by default (``auto`` guidance measures drift so too)
DEFAULT_SAMPLES, DEFAULT_SAMPLE_SEED, DEFAULT_BATCH_SIZE = 100, 0, 8


def _deferred(name: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``name`` of :mod:`.commands`, imported when it is called."""

    def handle(args: argparse.Namespace) -> int:
        from . import commands

        return getattr(commands, name)(args)

    return handle


def _command(
    commands: Any,
    name: str,
    help_: str,
    handler: str,
    *,
    out: str,
    samples: bool,
) -> argparse.ArgumentParser:
    """A subcommand run by ``commands.<handler>``, with the options every analysis shares
    (``--out``, ``--device``) and, with ``samples``, those that choose the task samples."""
    parser = commands.add_parser(name, help=help_, description=help_)
    parser.add_argument("--out", default=out, help=f"output directory (default: {out})")
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="where models run (default: cuda when available)",
    )
    if samples:
        parser.add_argument(
            "--samples", type=int, default=DEFAULT_SAMPLES,
            help=f"task samples (default: {DEFAULT_SAMPLES})",
        )
        parser.add_argument(
            "--seed", type=int, default=DEFAULT_SAMPLE_SEED, help="sample choice and t-SNE seed"
        )
        parser.add_argument(
            "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="samples per forward"
        )
    parser.set_defaults(handler=_deferred(handler))
    return parser


def add_analysis_commands(subparsers: Any) -> None:
    """Add ``analyze {drift,trajectory,layers}`` and ``bench`` to the CLI's subcommands."""
    analyze = subparsers.add_parser(
        "analyze", help="analyse runs: hidden-state drift, trajectories",
        description="Analyse the checkpoints and waypoints of runs.",
    )
    kinds = analyze.add_subparsers(dest="analysis", required=True)

    drift_ = _command(
        kinds, "drift",
        "mean cosine distance of hidden states to the pretrained model, per layer and step",
        "drift_command", out="analysis", samples=True,
    )
    drift_.add_argument("path", help="a run directory, its checkpoints/ or a waypoint directory")
    drift_.add_argument("--spec", help="the run's spec.toml (default: found above PATH)")

    trajectory_ = _command(
        kinds, "trajectory",
        "t-SNE of the hidden states of every checkpoint and waypoint of several runs",
        "trajectory_command", out="analysis", samples=True,
    )
    trajectory_.add_argument("runs", nargs="+", metavar="RUN_DIR")

    layers_ = _command(
        kinds, "layers",
        "each layer's conversion error after a short alignment, worst first, and the "
        "keep_attention line that keeps the worst",
        "layers_command", out="analysis", samples=True,
    )
    layers_.add_argument("spec", help="the spec whose student is measured")
    layers_.add_argument("--keep", type=int, default=1, help="layers to keep (default: 1)")
    layers_.add_argument(
        "--steps", type=int,
        help="alignment steps before measuring (default: guidance.align_steps, else 100)",
    )
    layers_.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a spec value, as run --set does",
    )

    bench = _command(
        subparsers, "bench",
        "forward time and peak memory of teacher and student against sequence length",
        "bench_command", out="bench", samples=False,
    )
    bench.add_argument("targets", nargs="+", metavar="SPEC_OR_STUDENT_DIR")
    bench.add_argument(
        "--lengths", help="comma-separated lengths: tokens for text, seconds for audio "
        "(default: 128,...,8192 tokens or 1,2,4,8,15,30,60 s)",
    )
    bench.add_argument("--batch", type=int, default=1, help="sequences per forward (default: 1)")
    bench.add_argument("--repeats", type=int, default=5, help="timed forwards per point")
    bench.add_argument(
        "--max-seconds", type=float, default=120.0,
        help="skip a model's longer lengths once one forward takes longer (default: 120)",
    )
    bench.add_argument(
        "--overhead-steps", type=int, default=8,
        help="training steps timed per guidance mode, specs only (0 = skip)",
    )
    bench.add_argument("--overhead-batch", type=int, default=8, help="training rows per step")
    bench.add_argument("--update-every", type=int, default=4, help="trajectory's T_u")
    bench.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="wall: elapsed time; cpu: CPU time of one torch thread, steadier on a busy machine",
    )
