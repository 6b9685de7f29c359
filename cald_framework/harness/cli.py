"""``python -m cald_framework eval TARGET... [--tasks ...]``: lm-eval on teacher and student.

Each TARGET is a run directory (its teacher and its exported student are evaluated) or a
model directory saved by cald-framework. Tasks are lm-evaluation-harness task names, hub tasks
included where the hub is reachable, plus the local ones (:mod:`cald_framework.harness.tasks`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_text_atomic
from ..errors import CaldError
from ..layout import EVAL_FILE, SPEC_FILE
from .models import Candidate, LogitsModel, candidates
from .tasks import CLOZE_TASK, TEXT_TASK, write_local_tasks

_MISSING = "cald eval needs lm-evaluation-harness: pip install 'cald-framework[eval]'"


def add_eval_command(commands: Any) -> None:
    """Register ``eval`` on the top-level parser."""
    help_ = "evaluate teachers and students with lm-evaluation-harness"
    sub = commands.add_parser("eval", help=help_, description=help_)
    sub.add_argument("targets", nargs="+", type=Path, help="run directories or model directories")
    sub.add_argument("--tasks", default=CLOZE_TASK,
                     help=f"comma-separated lm-eval tasks (default {CLOZE_TASK}; {TEXT_TASK} with --text)")
    sub.add_argument("--text", type=Path, help=f"a text file for the {TEXT_TASK} perplexity task")
    sub.add_argument("--limit", type=int, help="at most this many documents per task")
    sub.add_argument("--num-fewshot", type=int, default=0)
    sub.add_argument("--batch-size", type=int, default=8)
    sub.add_argument("--max-length", type=int, default=2048, help="longest input, in tokens")
    sub.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--out", type=Path,
                     help=f"JSON results (default: {EVAL_FILE} in the first run directory)")
    sub.set_defaults(handler=_cmd_eval)


def _evaluate(candidate: Candidate, tasks: list[str], include: Path, args: argparse.Namespace) -> dict[str, Any]:
    """lm-eval's results for one model: ``{task: {metric: value}}``, standard errors apart."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise CaldError(_MISSING) from None
    model = HFLM(
        pretrained=LogitsModel(candidate.model),  # type: ignore[arg-type]
        tokenizer=candidate.tokenizer,
        backend="causal",
        batch_size=args.batch_size,
        max_length=args.max_length,
    )
    done = simple_evaluate(
        model=model,
        tasks=tasks,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        task_manager=TaskManager(include_path=str(include)),
        log_samples=False,
        random_seed=args.seed,
        numpy_random_seed=args.seed,
        torch_random_seed=args.seed,
        fewshot_random_seed=args.seed,
    )
    if done is None:
        raise CaldError("lm-eval returned no results (a multi-process launch is not supported)")
    return {
        task: {
            name.split(",")[0]: value
            for name, value in metrics.items()
            if "," in name and isinstance(value, (int, float))
        }
        for task, metrics in done["results"].items()
    }


def render_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per task and metric, one column per model."""
    names = list(results)
    rows = ["| task | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    first = results[names[0]]
    for task in sorted(first):
        metrics = sorted(name for name in first[task] if not name.endswith("_stderr"))
        for metric in metrics:
            cells = []
            for name in names:
                value = results[name].get(task, {}).get(metric)
                error = results[name].get(task, {}).get(f"{metric}_stderr")
                cell = "n/a" if value is None else f"{value:.4g}"
                cells.append(cell if not isinstance(error, float) else f"{cell} ± {error:.2g}")
            rows.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cmd_eval(args: argparse.Namespace) -> int:
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    if TEXT_TASK in tasks and args.text is None:
        raise CaldError(f"task {TEXT_TASK} needs --text FILE")
    if args.text is not None and TEXT_TASK not in tasks:
        tasks.append(TEXT_TASK)
    device = torch.device(args.device)
    found = candidates(args.targets, device)
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="cald-eval-tasks-") as include:
        write_local_tasks(Path(include), args.text)
        for candidate in found:
            results[candidate.name] = _evaluate(candidate, tasks, Path(include), args)
    table = render_table(results)
    print(table, end="")
    out = args.out
    if out is None and (args.targets[0] / SPEC_FILE).is_file():
        out = args.targets[0] / EVAL_FILE
    if out is not None:
        record = {"tasks": tasks, "limit": args.limit, "num_fewshot": args.num_fewshot, "results": results}
        write_text_atomic(out, json.dumps(record, indent=2) + "\n")
        write_text_atomic(out.with_suffix(".md"), table)
        print(f"written: {out}")
    return 0
