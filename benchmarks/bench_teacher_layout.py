"""What a frozen teacher costs each process under ``[training.distributed] teacher``, and that
it computes what the whole teacher computes.

Run under ``torchrun`` (any number of processes; ``offload`` needs an accelerator). Each
process builds a GPT-NeoX teacher with random weights (seeded: every process builds the same),
places it as the engine places a frozen teacher (:func:`place_frozen_teacher`), runs it as a
guidance mode does (:func:`frozen_forward`), and compares its logits and hidden states with the
whole teacher's. A second teacher (another seed) then replaces the first, as a waypoint does.
Each process writes ``rank-NNNNN.json`` into ``--out``; the main process prints one table.

    torchrun --standalone --nproc_per_node 2 benchmarks/bench_teacher_layout.py --layout shard
    torchrun --standalone --nproc_per_node 1 benchmarks/bench_teacher_layout.py --layout offload \\
        --hidden 1024 --layers 24     # pythia-410m's shape, on one GPU
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from cald_framework.contracts import CaldOutput, HeadSpec
from cald_framework.engine.precision import Precision
from cald_framework.engine.teacher_layout import local_parameter_bytes, place_frozen_teacher
from cald_framework.engine.teacher_updates import frozen_forward
from cald_framework.modeling import CaldModel

#: tokens per row of the batch each teacher runs on
LENGTH = 32
#: one teacher per seed, placed one after the other (a waypoint swap)
SEEDS = (0, 1)


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=("replicate", "shard", "offload"), default="shard")
    parser.add_argument("--hidden", type=int, default=512, help="width (default: pythia-70m's)")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/teacher-layout"))
    return parser.parse_args()


def _teacher(options: argparse.Namespace, seed: int) -> CaldModel:
    config = {
        "model_type": "gpt_neox",
        "hidden_size": options.hidden,
        "num_hidden_layers": options.layers,
        "num_attention_heads": max(1, options.hidden // 64),
        "intermediate_size": 4 * options.hidden,
        "vocab_size": options.vocab,
        "max_position_embeddings": LENGTH,
    }
    torch.manual_seed(seed)
    return CaldModel.from_source_config("gpt-neox", config, HeadSpec("causal_lm"), max_length=LENGTH).eval()


def _largest_difference(a: CaldOutput, b: CaldOutput) -> float:
    pairs = [(a.logits, b.logits), *zip(a.hidden_states, b.hidden_states, strict=True)]
    return max((x.float() - y.float()).abs().max().item() for x, y in pairs)


def _measure(options: argparse.Namespace, accelerator: Accelerator, seed: int, batch: dict[str, Any]) -> dict[str, Any]:
    """One teacher: the whole one's outputs, then the placed one's, its bytes and device peak."""
    precision = Precision("fp32", accelerator.device)
    whole = _teacher(options, seed).requires_grad_(False).to(accelerator.device)
    whole_bytes = local_parameter_bytes(whole)
    expected = frozen_forward(whole, batch, precision)
    del whole
    if accelerator.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    teacher = place_frozen_teacher(_teacher(options, seed).requires_grad_(False), accelerator, options.layout)
    found = frozen_forward(teacher, batch, precision)
    peak = torch.cuda.max_memory_allocated() if accelerator.device.type == "cuda" else None
    return {
        "seed": seed,
        "whole_bytes": whole_bytes,
        "local_bytes": local_parameter_bytes(teacher),
        "largest_difference": _largest_difference(found, expected),
        "peak_device_bytes": peak,
    }


def main() -> None:
    options = _options()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(options.vocab, (options.batch, LENGTH), generator=generator)
    batch = {"inputs": {"input_ids": ids.to(accelerator.device), "attention_mask": torch.ones_like(ids).to(accelerator.device)}}
    report = {
        "layout": options.layout,
        "device": str(accelerator.device),
        "processes": accelerator.num_processes,
        "rank": accelerator.process_index,
        "teachers": [_measure(options, accelerator, seed, batch) for seed in SEEDS],
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / f"rank-{accelerator.process_index:05d}.json").write_text(json.dumps(report, indent=1))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        print(f"teacher layout {options.layout!r} on {accelerator.num_processes} process(es), {accelerator.device.type}")
        print("rank  seed  whole MB  local MB  peak device MB  max |placed - whole|")
        for path in sorted(options.out.glob("rank-*.json")):
            done = json.loads(path.read_text())
            for row in done["teachers"]:
                peak = "-" if row["peak_device_bytes"] is None else f"{row['peak_device_bytes'] / 2**20:.1f}"
                print(f"{done['rank']:>4}  {row['seed']:>4}  {row['whole_bytes'] / 2**20:8.1f}  "
                      f"{row['local_bytes'] / 2**20:8.1f}  {peak:>14}  {row['largest_difference']:.2e}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
