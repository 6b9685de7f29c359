"""Figure 5 on this machine: teacher against student, forward time and peak memory by length.

The three built-in conversions, each student made with its mixer's default options:

* ``minilm``: all-MiniLM-L6-v2 (BERT, real weights: the quickstart spec's pinned asset) ->
  ``linformer``, 128 to 8192 tokens. The position table (512 rows) is extended with random rows.
* ``pythia``: a GPT-NeoX with pythia-70m's dimensions and random weights -> ``mamba``, 128 to
  8192 tokens, language-model head included.
* ``wav2vec2``: a Wav2Vec2 with wav2vec2-base's dimensions and random weights -> ``bimamba2``,
  1 to 60 s of 16 kHz audio.

Random weights take the same time as trained ones, so no checkpoint is downloaded for the last
two. ``--keep-attention 0,1,2`` (the default) times one student per number of layers that keep
the teacher's attention (hybrid students; the first layers are kept, as speed does not depend on
which), each as its own scenario beside the same teacher measurements. Each point is the median of ``--repeats`` forwards (batch 1) after a warm-up, in wall time,
or with ``--clock cpu`` in CPU time of a single torch thread (steadier when other jobs share
the machine); peak memory is what a forward allocates beyond the weights. A second table gives the training-step time of
each guidance mode over unguided training (batch 8 x 128 tokens, or 4 x 4 s of audio).

    python benchmarks/bench_scaling.py --out docs/figures
    python benchmarks/bench_scaling.py --scenarios wav2vec2 --audio-lengths 60,120 --overhead-steps 0
    python benchmarks/bench_scaling.py --scenarios pythia --keep-attention 0 --text-lengths 512,2048
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch
import torch.nn.functional as F

from cald_framework.analysis.bench import (
    DEFAULT_LENGTHS,
    plot_scaling,
    scaling,
    side_by_side,
    summarise,
)
from cald_framework.analysis.measure import positions, synthetic_inputs
from cald_framework.analysis.output import format_table, write_csv
from cald_framework.analysis.overhead import guidance_overhead
from cald_framework.assets import resolve_references
from cald_framework.contracts import (
    CaldOutput,
    HeadSpec,
    MetricAccumulator,
    NoOptions,
    Task,
    TaskData,
)
from cald_framework.conversion import convert
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries
from cald_framework.spec import load_spec

QUICKSTART = Path(__file__).resolve().parent.parent / "specs" / "quickstart.toml"

PYTHIA_70M = {
    "model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 512, "num_hidden_layers": 6,
    "num_attention_heads": 8, "intermediate_size": 2048, "max_position_embeddings": 2048,
    "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": True,
    "layer_norm_eps": 1e-5, "tie_word_embeddings": False,
}
WAV2VEC2_BASE = {
    "model_type": "wav2vec2", "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "feat_extract_norm": "group",
    "do_stable_layer_norm": False, "conv_bias": False, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "vocab_size": 32,
}


def _minilm() -> CaldModel:
    spec = load_spec(QUICKSTART).spec
    location = resolve_references(spec.teacher.model, spec.assets)
    return CaldModel.from_source("bert", location, HeadSpec("classification", 2))


@dataclass(frozen=True)
class Scenario:
    teacher: Callable[[], CaldModel]
    mixer: str
    #: training-step batch for the overhead table: rows and length (tokens or seconds)
    step_batch: tuple[int, float]


SCENARIOS = {
    "minilm": Scenario(_minilm, "linformer", (8, 128)),
    "pythia": Scenario(
        lambda: CaldModel.from_source_config("gpt-neox", PYTHIA_70M, HeadSpec("causal_lm")),
        "mamba", (8, 128),
    ),
    "wav2vec2": Scenario(
        lambda: CaldModel.from_source_config(
            "wav2vec2", WAV2VEC2_BASE, HeadSpec("token_classification", 32)
        ),
        "bimamba2", (4, 4.0),
    ),
}


class ProxyTask(Task):
    """A task of the usual cost for any head, for timing training steps on synthetic batches.

    Its loss is cross-entropy against the batch's fixed random labels; distillation compares
    the logits at every valid position (``hidden_mask``) when they are per position. It builds
    no data and computes no metrics: the overhead table only takes steps.
    """

    primary_metric = "loss"

    def __init__(self) -> None:
        super().__init__(NoOptions())

    def build_data(self, preprocessor: Any, seed: int) -> TaskData:
        raise NotImplementedError("the proxy task trains on batches made by _step_batch")

    def loss(self, output: CaldOutput, batch: Mapping[str, Any]) -> torch.Tensor:
        logits = output.logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1))

    def kd_logits(
        self, output: CaldOutput, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return output.logits, output.hidden_mask if output.logits.dim() == 3 else None

    def metrics(self) -> MetricAccumulator:
        raise NotImplementedError("the proxy task is not evaluated")


def _step_batch(model: CaldModel, rows: int, length: float) -> dict[str, Any]:
    inputs = synthetic_inputs(model, length, rows)
    logits = model(**inputs).logits
    labels = torch.randint(0, logits.shape[-1], logits.shape[:-1], generator=torch.Generator().manual_seed(0))
    return {"inputs": inputs, "labels": labels}


def guidance_steps(
    name: str, teacher: CaldModel, student: CaldModel, step_batch: tuple[int, float], *,
    steps: int, clock: str,
) -> list[dict[str, Any]]:
    """The guidance-step rows of one scenario, on one synthetic batch of ``step_batch`` size.

    The trainer only needs the data to size its run, so a one-row stand-in does.
    """
    with torch.no_grad():
        batch = _step_batch(teacher, *step_batch)
    data = TaskData(train=[batch], eval=[], collate=list, head=teacher.head_spec)
    rows = guidance_overhead(
        student, teacher, ProxyTask(), data, batch, steps=steps, update_every=4, clock=clock
    )
    return [{"scenario": name, **row} for row in rows]


def hybrid_students(
    teacher: CaldModel, mixer: str, max_length: int, kept_counts: tuple[int, ...]
) -> dict[int, CaldModel]:
    """One student per number of kept attention layers (the first ones), in eval mode."""
    plugin = load_registries().mixers.get(mixer)
    return {
        kept: convert(teacher, plugin, {}, max_length, keep_attention=list(range(kept)))[0].eval()
        for kept in kept_counts
    }


def scenario_name(base: str, kept: int) -> str:
    """``base``, with the number of kept attention layers for a hybrid student."""
    if kept == 0:
        return base
    return f"{base}, {kept} attention layer{'s' if kept > 1 else ''} kept"


def per_student(rows: list[dict[str, Any]], base: str, kept_counts: tuple[int, ...]) -> list[dict[str, Any]]:
    """The rows of one scaling run over ``teacher`` and ``student-<kept>`` models, as one
    teacher-and-``student`` scenario per student (the teacher's rows repeated in each)."""
    split = []
    for kept in kept_counts:
        mine = [row for row in rows if row["model"] in ("teacher", f"student-{kept}")]
        split += [
            {**row, "scenario": scenario_name(base, kept), "model": row["model"].split("-")[0]}
            for row in mine
        ]
    return split


def run(name: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    scenario = SCENARIOS[name]
    torch.manual_seed(0)
    teacher = scenario.teacher().eval()
    lengths = args.lengths.get(teacher.family.modality) or DEFAULT_LENGTHS[teacher.family.modality]
    longest = positions(teacher, synthetic_inputs(teacher, max(lengths), 1))
    if teacher.family.extend_positions(teacher.backbone, longest):
        print(f"{name}: teacher position table extended to {longest} with random rows")
    students = hybrid_students(teacher, scenario.mixer, longest, args.keep_attention)
    for model in (teacher, *students.values()):
        model.to(args.device)
    base = f"{name} -> {scenario.mixer}"
    rows = scaling(
        {"teacher": teacher, **{f"student-{kept}": model for kept, model in students.items()}},
        lengths, repeats=args.repeats, max_seconds=args.max_seconds, scenario=base,
        clock=args.clock,
    )
    rows = per_student(rows, base, args.keep_attention)
    if not args.overhead_steps:
        return rows, []
    return rows, guidance_steps(
        name, teacher, students[args.keep_attention[0]], scenario.step_batch,
        steps=args.overhead_steps, clock=args.clock,
    )


def write(
    rows: list[dict[str, Any]], overhead: list[dict[str, Any]], out: Path
) -> list[dict[str, Any]]:
    """Write the scaling table, its summary and plot, and the guidance-step table; returns the
    summary."""
    table = side_by_side(rows)
    write_csv(out / "bench_scaling.csv", table, list(table[0]))
    plot_scaling(rows, out / "bench_scaling.png", "tokens or seconds")
    summary = [{"scenario": s, **summarise([r for r in rows if r["scenario"] == s])}
               for s in dict.fromkeys(row["scenario"] for row in rows)]
    write_csv(out / "bench_scaling_summary.csv", summary, list(summary[0]))
    if overhead:
        write_csv(out / "bench_guidance_steps.csv", overhead, list(overhead[0]))
    return summary


def _numbers(text: str | None, kind: type) -> tuple | None:
    return tuple(kind(part) for part in text.split(",")) if text else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="minilm,pythia,wav2vec2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--overhead-steps", type=int, default=8, help="0 skips the overhead table")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="cpu: CPU seconds of one torch thread, steadier when other jobs share the machine",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the forwards of the scaling table run (default: the GPU when there is one)",
    )
    parser.add_argument("--text-lengths", help="comma-separated token counts (default: 128 to 8192)")
    parser.add_argument("--audio-lengths", help="comma-separated seconds of audio (default: 1 to 60)")
    parser.add_argument(
        "--keep-attention", default="0,1,2",
        help="comma-separated numbers of layers that keep attention, one student each; the "
        "guidance-step table uses the first",
    )
    args = parser.parse_args()
    args.keep_attention = _numbers(args.keep_attention, int)
    args.lengths = {
        "text": _numbers(args.text_lengths, int),
        "audio": _numbers(args.audio_lengths, float),
    }
    if args.clock == "cpu":
        torch.set_num_threads(1)
    out = Path(args.out)
    rows, overhead = [], []
    for name in args.scenarios.split(","):
        scenario_rows, scenario_overhead = run(name, args)
        rows += scenario_rows
        overhead += scenario_overhead
        summary = write(rows, overhead, out)  # after each scenario: a long run keeps its part
        table = side_by_side(scenario_rows)
        print(format_table(table, list(table[0])), flush=True)
    print(format_table(summary, list(summary[0])))
    if overhead:
        print(format_table(overhead, list(overhead[0])))
    print(f"device: {args.device}; clock: {args.clock}; torch threads: {torch.get_num_threads()}; "
          f"results in {out}")


if __name__ == "__main__":
    main()
