"""Nested state (optimizer and guidance state dicts) split into JSON and named tensors.

Pickle would run code from a checkpoint; this codec only stores data. The skeleton keeps what
JSON alone would lose: integer dict keys (an optimizer's ``state`` is keyed by parameter index,
and string keys would make ``load_state_dict`` silently drop it) and tuples (``betas``).
Every container becomes a one-key marker object, so no user key can be mistaken for one.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import CheckpointError

_TENSOR, _DICT, _TUPLE, _LIST = "__tensor__", "__dict__", "__tuple__", "__list__"
_SCALARS = (str, int, float, bool, type(None))


def encode(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(skeleton, tensors)``: a JSON-ready skeleton and the tensors it names by path.

    Paths join keys with ``/``, so a flat state dict keeps its own keys as tensor names.
    """
    tensors: dict[str, torch.Tensor] = {}

    def child(path: str, key: object) -> str:
        return f"{path}/{key}" if path else str(key)

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            name = path or "."
            if name in tensors:
                raise ValueError(f"two tensors would both be stored as {name!r}")
            tensors[name] = node
            return {_TENSOR: name}
        if isinstance(node, dict):
            for key in node:
                if not isinstance(key, _SCALARS):
                    raise TypeError(f"cannot store dict key {key!r} at {path or 'the root'}")
            return {_DICT: [[key, walk(value, child(path, key))] for key, value in node.items()]}
        if isinstance(node, (list, tuple)):
            marker = _TUPLE if isinstance(node, tuple) else _LIST
            return {marker: [walk(value, child(path, i)) for i, value in enumerate(node)]}
        if isinstance(node, _SCALARS):
            return node
        raise TypeError(f"cannot store a {type(node).__name__} at {path or 'the root'}")

    return walk(tree, ""), tensors


def decode(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode`."""
    if not isinstance(skeleton, dict):
        return skeleton
    (marker, value), = skeleton.items()
    if marker == _TENSOR:
        if value not in tensors:
            raise CheckpointError(f"tensor {value!r} is missing from the checkpoint")
        return tensors[value]
    if marker == _DICT:
        return {key: decode(item, tensors) for key, item in value}
    items = [decode(item, tensors) for item in value]
    return tuple(items) if marker == _TUPLE else items
