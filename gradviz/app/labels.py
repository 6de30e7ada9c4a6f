"""How a node is named and sized on screen: the one place for node labels (shared by the graph,
the status line, the timeline and the inspector)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# PyTorch names AccumulateGrad and GraphRoot with this namespace; torchviz draws them without it.
TORCH_NAMESPACE = "torch::autograd::"
LEAF_KINDS = ("parameter", "leaf", "frozen", "input")


def short_op(op: str | None) -> str:
    """An op name as drawn: ``torch::autograd::AccumulateGrad`` -> ``AccumulateGrad``."""
    return (op or "").replace(TORCH_NAMESPACE, "")


def node_label(data: Mapping[str, Any], key: str) -> str:
    """The label a node is drawn with: the op as PyTorch names it (torchviz's short form for
    AccumulateGrad), a leaf's name with its shape."""
    if data.get("kind") in LEAF_KINDS:
        shape = tuple(data.get("shape", ()))
        return f"{data.get('name') or key}\n{shape}"
    return short_op(data.get("op") or key)


def node_size(label: str) -> tuple[float, float]:
    """(width, height) in scene units of a box holding ``label`` (one line per ``\\n``)."""
    lines = label.split("\n")
    return (max(60.0, 7.2 * max(len(line) for line in lines) + 18.0), 14.0 * len(lines) + 12.0)
