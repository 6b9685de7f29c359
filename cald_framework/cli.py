"""Command line: ``python -m cald_framework {run,validate,plugins,schema,analyze,bench,data,eval}``.

User errors (a bad spec, data, checkpoint or plugin) print one line and exit with code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .errors import CaldError

USER_ERROR = 2


def _one_line_warnings() -> None:
    def show(message: Any, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show  # type: ignore[assignment]


def _cmd_validate(args: argparse.Namespace) -> int:
    from .spec import load_spec

    failures = 0
    for path in args.specs:
        try:
            validated = load_spec(path, args.set)
        except CaldError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue
        spec = validated.spec
        print(
            f"ok: {path} ({spec.teacher.source} -> {spec.student.mixer}, task {spec.task.kind}, "
            f"mode {spec.guidance.mode})"
        )
    return USER_ERROR if failures else 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .plugin_manager import load_registries

    rows = [
        {
            "kind": kind,
            "name": entry.plugin.name,
            "distribution": entry.provenance.distribution,
            "version": entry.provenance.version,
            "module": entry.provenance.module,
            "description": getattr(entry.plugin, "description", ""),
        }
        for kind, entry in load_registries().all()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    widths = {key: max([len(key)] + [len(row[key]) for row in rows]) for key in ("kind", "name", "distribution", "version")}
    print("  ".join(key.upper().ljust(width) for key, width in widths.items()))
    for row in rows:
        print("  ".join(row[key].ljust(width) for key, width in widths.items()))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from .spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .run.pipeline import run_pipeline
    from .spec import load_spec

    validated = load_spec(args.spec, args.set)
    summary_stream = sys.stdout
    # stdout carries the JSON summary alone; what libraries print while the pipeline runs goes
    # to stderr (DeepSpeed, imported by accelerate, logs to the stdout of its import time)
    with contextlib.redirect_stdout(sys.stderr):
        results = run_pipeline(validated, resume=args.resume)
    if results is not None:  # the main process of a multi-process run reports
        print(json.dumps(results.summary(), indent=2), file=summary_stream)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cald_framework",
        description="Convert pretrained transformers into linear-complexity models with CALD.",
    )
    parser.add_argument("--version", action="version", version=f"cald-framework {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.set_defaults(handler=handler)
        return sub

    overrides = dict(
        action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a spec value"
    )
    run = add("run", _cmd_run, "run the whole pipeline of a spec")
    run.add_argument("spec")
    run.add_argument("--set", **overrides)
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint")

    validate = add("validate", _cmd_validate, "check specs without training")
    validate.add_argument("specs", nargs="+")
    validate.add_argument("--set", **overrides)

    plugins = add("plugins", _cmd_plugins, "list registered plugins")
    plugins.add_argument("--json", action="store_true")

    add("schema", _cmd_schema, "print the JSON Schema of the spec")

    from .analysis.cli import add_analysis_commands

    add_analysis_commands(commands)

    from .data.cli import add_data_command
    from .harness.cli import add_eval_command

    add_data_command(commands)
    add_eval_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _one_line_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CaldError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
