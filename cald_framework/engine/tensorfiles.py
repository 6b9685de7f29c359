"""Safetensors files written atomically, with tied tensors kept tied and never a pickle.

Safetensors refuses tensors that share memory (tied embeddings, views of one buffer). A tensor
that is exactly another one is stored once and recorded as an alias in the file's metadata;
other overlaps are copied. :func:`read_tensors` restores the aliases, so a state dict round
trips with every key present.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..atomic import write_atomic
from ..errors import CheckpointError

_ALIASES_KEY = "cald_aliases"
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _view_key(tensor: torch.Tensor) -> tuple[object, ...]:
    return (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))


def _storable(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Unique CPU tensors to save and ``{alias: stored name}`` for exact duplicates."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    by_view: dict[tuple[object, ...], str] = {}
    storages: set[int] = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach()
        key = _view_key(tensor)
        if tensor.numel() and key in by_view:
            aliases[name] = by_view[key]
            continue
        storage = tensor.untyped_storage().data_ptr()
        cpu = tensor.cpu()
        stored[name] = (cpu.clone() if storage in storages else cpu).contiguous()
        if tensor.numel():
            storages.add(storage)
            by_view[key] = name
    return stored, aliases


def _save(tensors: dict[str, torch.Tensor], target: Path, metadata: dict[str, str]) -> None:
    try:
        save_file(tensors, str(target), metadata=metadata)
    except SafetensorError as error:  # how the writer reports I/O errors such as a full disk
        found = _OS_ERROR.search(str(error))
        code = int(found[1]) if found else None
        raise (OSError(code, os.strerror(code)) if code else OSError(str(error))) from error


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Save a flat ``{name: tensor}`` mapping as one safetensors file, atomically.

    A failed write (a full disk) raises :class:`OSError` and leaves any older ``path`` as it was.
    """
    stored, aliases = _storable(tensors)
    metadata = {_ALIASES_KEY: json.dumps(aliases)}
    write_atomic(path, lambda target: _save(stored, target, metadata))


def read_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a file written by :func:`write_tensors` (or any safetensors file) onto ``device``."""
    target = torch.device(device)
    where = "cpu" if target.type == "cpu" else str(target)  # safetensors refuses "cpu:0"
    try:
        with safe_open(str(path), framework="pt", device=where) as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            metadata = handle.metadata() or {}
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error
    for alias, name in json.loads(metadata.get(_ALIASES_KEY, "{}")).items():
        tensors[alias] = tensors[name]
    return tensors


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
