"""Forward + backward time of the built-in mixers on CPU, next to transformers' Mamba mixers.

Prints a table of medians over a few repeats. Not a test: the figures depend on the machine.

    python benchmarks/bench_mixers.py [--batch 8] [--length 512] [--width 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from cald_framework.contracts import MixerContext, MixerPlugin
from cald_mixers.plugin import cald_register_mixers


def _seconds(
    run: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, repeats: int
) -> tuple[float, float]:
    """Median wall and CPU (all threads) seconds of forward + backward, after one warm-up.

    CPU time is reported too because on a shared machine it is far steadier than wall time.
    """
    wall, cpu = [], []
    for attempt in range(repeats + 1):
        hidden.grad = None
        start, start_cpu = time.perf_counter(), time.process_time()
        run(hidden).sum().backward()
        if attempt:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _ours(width: int, heads: int, length: int) -> dict[str, nn.Module]:
    plugins: list[MixerPlugin] = []
    cald_register_mixers(register=plugins.append)
    mixers = {}
    for plugin in plugins:
        ctx = MixerContext(
            d_model=width,
            num_heads=heads,
            layer_index=0,
            num_layers=1,
            max_length=length,
            causal=plugin.direction == "causal",
            shared=nn.ModuleDict(),
        )
        mixers[plugin.name] = plugin.build(plugin.options(), ctx)
    return mixers


def _transformers(width: int) -> dict[str, nn.Module]:
    from transformers import Mamba2Config, MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    logging.getLogger("transformers").setLevel(logging.ERROR)
    mamba = MambaConfig(
        hidden_size=width, state_size=16, expand=2, conv_kernel=4, num_hidden_layers=1
    )
    mamba2 = Mamba2Config(
        hidden_size=width,
        state_size=128,
        expand=2,
        head_dim=64,
        num_heads=2 * width // 64,
        n_groups=1,
        conv_kernel=4,
        chunk_size=256,
        num_hidden_layers=1,
    )
    return {
        "transformers MambaMixer": MambaMixer(mamba, layer_idx=0),
        "transformers Mamba2Mixer": Mamba2Mixer(mamba2, layer_idx=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    hidden = torch.randn(args.batch, args.length, args.width, requires_grad=True)
    results: dict[str, tuple[float, float]] = {}
    for name, mixer in _ours(args.width, args.heads, args.length).items():
        results[name] = _seconds(lambda x, m=mixer: m(x, None), hidden, args.repeats)
    if not args.skip_transformers:
        for name, mixer in _transformers(args.width).items():
            results[name] = _seconds(mixer, hidden, args.repeats)

    print(
        f"forward + backward on CPU, {args.threads} threads, batch {args.batch} x length "
        f"{args.length} x width {args.width}, median of {args.repeats} after a warm-up"
    )
    print(f"{'mixer':<28}{'wall s':>10}{'cpu s':>10}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<28}{wall:>10.3f}{cpu:>10.3f}")
    for ours, theirs in (
        ("mamba", "transformers MambaMixer"),
        ("mamba2", "transformers Mamba2Mixer"),
    ):
        if theirs in results:
            wall_ratio = results[theirs][0] / results[ours][0]
            cpu_ratio = results[theirs][1] / results[ours][1]
            print(f"{ours} vs {theirs}: {wall_ratio:.1f}x faster (wall), {cpu_ratio:.1f}x (cpu)")


if __name__ == "__main__":
    main()
