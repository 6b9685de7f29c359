"""``python -m cald_framework data NAME --out DIR [--option value ...]``: make a data set.

Each generator's options become flags (``per_intent`` is ``--per-intent``), so the command line
and a spec's ``[assets.NAME] options`` table take the same names and the same checks.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import DataError
from .generators import GENERATORS


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_data_command(commands: Any) -> None:
    """Register ``data`` and one sub-command per generator on the top-level parser."""
    data = commands.add_parser("data", help="make a data set", description="make a data set")
    kinds = data.add_subparsers(dest="generator", required=True)
    for name, maker in GENERATORS.items():
        sub = kinds.add_parser(name, help=maker.description, description=maker.description)
        sub.add_argument("--out", type=Path, required=True, help="output directory")
        for field, info in maker.options.model_fields.items():
            sub.add_argument(_flag(field), dest=field, type=info.annotation, default=info.default)
        sub.set_defaults(handler=_cmd_data)


def _cmd_data(args: argparse.Namespace) -> int:
    maker = GENERATORS[args.generator]
    values = {field: getattr(args, field) for field in maker.options.model_fields}
    try:
        options = maker.options(**values)
    except ValidationError as error:
        problem = error.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else "options"
        raise DataError(f"{_flag(field)}: {problem['msg']}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    maker.make(args.out, options)
    print(args.out)
    return 0
