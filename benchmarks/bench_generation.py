"""Per-token generation latency and memory against context length: teacher against student.

The teacher is a GPT-NeoX with pythia-70m's dimensions (random weights: timing does not depend
on them) decoding with transformers' key/value cache: the model's own forward, one token per
call, with ``past_key_values``. The student is its ``mamba`` conversion decoding through
:class:`cald_framework.generation.RecurrentDecoder`, whose mixers carry a fixed-size state.

For each context length the context is consumed first (the teacher in one forward that fills
its cache, the student token by token), then ``--tokens`` new tokens are decoded greedily and
timed one by one. The table gives the median time per token, the size of the decoding state
(the teacher's cache grows with the context; the student's does not) and the memory one decode
step allocates.

    python benchmarks/bench_generation.py --out docs/figures
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from cald_framework.analysis.measure import CLOCKS, peak_bytes, synthetic_inputs
from cald_framework.analysis.output import figure, format_table, progress, write_csv
from cald_framework.contracts import HeadSpec
from cald_framework.conversion import convert
from cald_framework.generation import RecurrentDecoder
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries

PYTHIA_70M = {
    "model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 512, "num_hidden_layers": 6,
    "num_attention_heads": 8, "intermediate_size": 2048, "max_position_embeddings": 8192,
    "rotary_pct": 0.25, "use_parallel_residual": True, "tie_word_embeddings": False,
}
MB = 2**20


def _tensor_bytes(value: Any) -> int:
    """Bytes of every tensor in ``value`` (tensors, dataclasses and lists of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if dataclasses.is_dataclass(value):
        return sum(_tensor_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def _decode(step: Any, first: torch.Tensor, tokens: int, clock: str) -> tuple[float, int]:
    """Median seconds per greedy step over ``tokens`` steps, and the peak bytes of one step."""
    now = CLOCKS[clock]
    token = first
    times = []
    for _ in range(tokens):
        start = now()
        token = step(token)
        times.append(now() - start)
    return statistics.median(times), peak_bytes(lambda: step(token), torch.device("cpu"))


def teacher_figures(
    teacher: CaldModel, context: torch.Tensor, tokens: int, clock: str
) -> dict[str, float]:
    backbone = teacher.backbone
    output = backbone(input_ids=context, use_cache=True)
    cache = output.past_key_values

    def step(token: torch.Tensor) -> torch.Tensor:
        logits = backbone(input_ids=token[:, None], past_key_values=cache, use_cache=True).logits
        return logits[:, -1].argmax(-1)

    seconds, peak = _decode(step, output.logits[:, -1].argmax(-1), tokens, clock)
    state = sum(_tensor_bytes([layer.keys, layer.values]) for layer in cache.layers)
    return {"teacher_ms_per_token": seconds * 1000, "teacher_state_mb": state / MB,
            "teacher_step_peak_mb": peak / MB}


def student_figures(
    student: CaldModel, context: torch.Tensor, tokens: int, clock: str
) -> dict[str, float]:
    with RecurrentDecoder(student, context.shape[0]) as decoder:
        for position in range(context.shape[1] - 1):
            decoder.feed(context[:, position])
        seconds, peak = _decode(
            lambda t: decoder.feed(t).argmax(-1), context[:, -1], tokens, clock
        )
        state = sum(_tensor_bytes(slot.recurrent_state) for slot in decoder.slots)
    return {"student_ms_per_token": seconds * 1000, "student_state_mb": state / MB,
            "student_step_peak_mb": peak / MB}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    contexts = [row["context"] for row in rows]
    with figure(path, panels=2) as (latency, memory):
        for role, style in (("teacher", "--o"), ("student", "-o")):
            latency.plot(contexts, [r[f"{role}_ms_per_token"] for r in rows], style, label=role)
            memory.plot(contexts, [r[f"{role}_state_mb"] for r in rows], style, label=role)
        latency.set(ylabel="ms per generated token", title="decoding latency", ylim=(0, None))
        memory.set(ylabel="decoding state (MiB)", yscale="log", title="KV cache vs recurrent state")
        for axes in (latency, memory):
            axes.set_xscale("log", base=2)
            axes.set_xticks(contexts, [str(c) for c in contexts])
            axes.set(xlabel="context length (tokens)")
            axes.grid(alpha=0.3)
            axes.legend()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", default="128,512,1024,2048,4096")
    parser.add_argument("--tokens", type=int, default=16, help="decoded tokens timed per context")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="cpu: CPU seconds of one torch thread, steadier when other jobs share the machine",
    )
    args = parser.parse_args()
    if args.clock == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = CaldModel.from_source_config("gpt-neox", PYTHIA_70M, HeadSpec("causal_lm")).eval()
    student, _ = convert(teacher, load_registries().mixers.get("mamba"), {}, 8192)
    student.eval()
    rows = []
    with torch.inference_mode():
        for length in progress([int(c) for c in args.contexts.split(",")], "contexts"):
            context = synthetic_inputs(teacher, length, 1)["input_ids"]
            rows.append(
                {"context": length, **teacher_figures(teacher, context, args.tokens, args.clock),
                 **student_figures(student, context, args.tokens, args.clock)}
            )
    columns = list(rows[0])
    print(format_table(rows, columns))
    out = Path(args.out)
    write_csv(out / "bench_generation.csv", rows, columns)
    plot(rows, out / "bench_generation.png")
    print(f"clock: {args.clock}; torch threads: {torch.get_num_threads()}; results in {out}")


if __name__ == "__main__":
    main()
