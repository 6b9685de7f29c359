"""Generation with a constant-size state: prefill, per-token latency and memory, teacher against student.

The teacher is a GPT-NeoX with pythia-70m's dimensions (random weights: timing does not depend
on them); the student is its ``mamba`` conversion. Both decode through the same path, the one
``generate()`` uses: the model's forward with a :class:`cald_framework.cache.CaldCache`, which
holds the teacher's keys and values and the student's mixer states.

First, a ``--prefill`` token prompt is read by the student twice: in one parallel forward (the
chunked scan returns the final states) and token by token (one recurrent step per position);
the ratio is the prefill speed-up. Then for each context length the context is read in one
forward and ``--tokens`` new tokens are decoded greedily and timed one by one. The table gives
the median time per token, the size of the decoding state (the teacher's cache grows with the
context; the student's does not) and the memory one decode step allocates.

    python benchmarks/bench_generation.py --out docs/figures
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from cald_framework.analysis.measure import CLOCKS, peak_bytes, synthetic_inputs
from cald_framework.analysis.output import figure, format_table, progress, write_csv
from cald_framework.cache import CaldCache
from cald_framework.contracts import HeadSpec
from cald_framework.conversion import convert
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries

PYTHIA_70M = {
    "model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 512, "num_hidden_layers": 6,
    "num_attention_heads": 8, "intermediate_size": 2048, "max_position_embeddings": 8192,
    "rotary_pct": 0.25, "use_parallel_residual": True, "tie_word_embeddings": False,
}
MB = 2**20


def _read(model: CaldModel, tokens: torch.Tensor, cache: CaldCache) -> torch.Tensor:
    """Next-token choices after ``tokens`` ``[B, T]``, read into ``cache``."""
    return model(input_ids=tokens, cache=cache).logits[:, -1].argmax(-1)


def _seconds(run: Callable[[], Any], clock: str) -> float:
    now = CLOCKS[clock]
    start = now()
    run()
    return now() - start


def prefill_figures(student: CaldModel, prompt: torch.Tensor, clock: str) -> dict[str, float]:
    """Seconds to read ``prompt`` in one parallel forward and one position at a time."""

    def stepped() -> None:
        cache = CaldCache(student.family, student.backbone)
        for position in range(prompt.shape[1]):
            _read(student, prompt[:, position : position + 1], cache)

    parallel = min(
        _seconds(lambda: _read(student, prompt, CaldCache(student.family, student.backbone)), clock)
        for _ in range(2)
    )
    sequential = _seconds(stepped, clock)
    return {"prompt": prompt.shape[1], "parallel_prefill_s": parallel,
            "token_by_token_s": sequential, "speed_up": sequential / parallel}


def decode_figures(
    role: str, model: CaldModel, context: torch.Tensor, tokens: int, clock: str
) -> dict[str, float]:
    """Median seconds per greedy token after ``context``, the cache size and one step's peak."""
    cache = CaldCache(model.family, model.backbone)
    token = _read(model, context, cache)
    times = []
    for _ in range(tokens):
        start = CLOCKS[clock]()
        token = _read(model, token[:, None], cache)
        times.append(CLOCKS[clock]() - start)
    state = cache.nbytes()
    peak = peak_bytes(lambda: _read(model, token[:, None], cache), torch.device("cpu"))
    return {f"{role}_ms_per_token": statistics.median(times) * 1000,
            f"{role}_state_mb": state / MB, f"{role}_step_peak_mb": peak / MB}


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
    parser.add_argument("--prefill", type=int, default=2048, help="prompt length of the prefill test")
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
    with torch.inference_mode():
        prompt = synthetic_inputs(teacher, args.prefill, 1)["input_ids"]
        prefill = prefill_figures(student, prompt, args.clock)
        rows = []
        for length in progress([int(c) for c in args.contexts.split(",")], "contexts"):
            context = synthetic_inputs(teacher, length, 1)["input_ids"]
            rows.append(
                {"context": length,
                 **decode_figures("teacher", teacher, context, args.tokens, args.clock),
                 **decode_figures("student", student, context, args.tokens, args.clock)}
            )
    print(format_table([prefill], list(prefill)))
    columns = list(rows[0])
    print(format_table(rows, columns))
    out = Path(args.out)
    write_csv(out / "bench_generation.csv", rows, columns)
    write_csv(out / "bench_generation_prefill.csv", [prefill], list(prefill))
    plot(rows, out / "bench_generation.png")
    print(f"clock: {args.clock}; torch threads: {torch.get_num_threads()}; results in {out}")


if __name__ == "__main__":
    main()
