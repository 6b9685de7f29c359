"""Peak memory and step time of one training step per memory option, for a Pythia-410m-sized student.

The student is a GPT-NeoX of Pythia-410m's shape (width 1,024, 24 layers, 16 heads, vocabulary
50,304) built from its config with random weights, every attention replaced by a Mamba mixer;
it trains on random tokens (default: batch 2 x 256) with the causal-LM loss. Each option runs
in a fresh subprocess, so nothing one option allocated is counted against the next.

Memory is the process's resident set (RSS), sampled every 5 ms by a thread during the steps:
what the operating system sees, weights, gradients, optimizer state and activations included
(``tracemalloc`` does not see torch's allocations). The step time is the last step's (the first
one also allocates the optimizer state). Not a test: the figures depend on the machine.

    python benchmarks/bench_memory.py [--batch 2] [--length 256] [--steps 2] [--layers 24]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil  # noqa: E402
import torch  # noqa: E402

from cald_framework.contracts import HeadSpec  # noqa: E402
from cald_framework.engine.activations import enable_gradient_checkpointing  # noqa: E402
from cald_framework.engine.optim import build_optimizer  # noqa: E402
from cald_framework.engine.precision import WEIGHT_DTYPES  # noqa: E402
from cald_framework.modeling import CaldConfig, CaldModel  # noqa: E402
from cald_framework.spec.sections import TrainingSection  # noqa: E402

#: option name -> (student.dtype, training.gradient_checkpointing, training.optimizer)
OPTIONS: dict[str, tuple[str, bool, str]] = {
    "fp32, adamw": ("fp32", False, "adamw"),
    "fp32, adamw_fused": ("fp32", False, "adamw_fused"),
    "fp32, adafactor": ("fp32", False, "adafactor"),
    "fp32, gradient checkpointing": ("fp32", True, "adamw"),
    "bf16 weights, adamw": ("bf16", False, "adamw"),
    "bf16 + checkpointing + adafactor": ("bf16", True, "adafactor"),
}


def pythia_410m_student(layers: int, length: int) -> CaldModel:
    """Pythia-410m's shape with Mamba mixers, built bare (random weights, no teacher copy)."""
    source_config = {
        "model_type": "gpt_neox", "hidden_size": 1024, "num_hidden_layers": layers,
        "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 50304,
        "max_position_embeddings": 2048, "rotary_pct": 0.25,
    }
    head = HeadSpec("causal_lm")
    config = CaldConfig(
        source="gpt-neox", source_config=source_config, head=head.__dict__, mixer="mamba",
        max_sequence_length=length,
    )
    return CaldModel(config)


class PeakRss:
    """The largest RSS of this process seen by a sampling thread while active."""

    def __init__(self, every: float = 0.005) -> None:
        self.process, self.every, self.peak = psutil.Process(), every, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def measure(option: str, batch: int, length: int, steps: int, layers: int) -> dict[str, Any]:
    """Train ``steps`` steps with ``option``; RSS before, peak RSS during, last step's time."""
    dtype, checkpointing, optimizer_name = OPTIONS[option]
    torch.manual_seed(0)
    model = pythia_410m_student(layers, length).to(WEIGHT_DTYPES[dtype]).train()
    if checkpointing:
        enable_gradient_checkpointing(model)
    optimizer = build_optimizer(model, TrainingSection(optimizer=optimizer_name, lr=1e-4))
    ids = torch.randint(0, 50304, (batch, length))
    mask = torch.ones_like(ids)
    before = psutil.Process().memory_info().rss
    seconds = 0.0
    with PeakRss() as peak:
        for _ in range(steps):
            started = time.perf_counter()
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten()
            )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    return {"option": option, "parameters": parameters, "rss_before": before, "rss_peak": peak.peak,
            "step_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = dict(batch=args.batch, length=args.length, steps=args.steps, layers=args.layers)
    if args.one:
        print(json.dumps(measure(args.one, **sizes)))
        return
    flags = [f"--{name}={value}" for name, value in sizes.items()]
    print(f"student: Pythia-410m shape ({args.layers} layers) with Mamba mixers; batch "
          f"{args.batch} x {args.length} tokens; {torch.get_num_threads()} threads")
    print("| option | peak RSS (GiB) | RSS before the steps (GiB) | step time (s) |")
    print("|---|---|---|---|")
    for option in OPTIONS:
        done = subprocess.run(
            [sys.executable, __file__, "--one", option, *flags], capture_output=True, text=True
        )
        if done.returncode:
            print(f"| {option} | failed: {done.stderr.strip().splitlines()[-1]} | | |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        gib = 2**30
        print(f"| {option} | {row['rss_peak'] / gib:.2f} | {row['rss_before'] / gib:.2f} | "
              f"{row['step_seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
