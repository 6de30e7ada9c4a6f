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
    AccumulateGrad), a leaf's name with its shape; a line saying so when its value holds NaN or
    Inf (known from the recorded summaries, with or without the anomaly switch)."""
    if data.get("kind") in LEAF_KINDS:
        shape = tuple(data.get("shape", ()))
        label = f"{data.get('name') or key}\n{shape}"
    else:
        label = short_op(data.get("op") or key)
    return label + nonfinite_line(data.get("nonfinite"))


def nonfinite_line(counts) -> str:
    """The line a node's label gets when its value (a forward output, a leaf's value) holds NaN or
    Inf: '\n⚠ 2 NaN, 1 Inf'; '' otherwise."""
    if not counts:
        return ""
    nan, inf = counts
    return "\n⚠ " + ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)


def node_size(label: str) -> tuple[float, float]:
    """(width, height) in scene units of a box holding ``label`` (one line per ``\\n``)."""
    lines = label.split("\n")
    return (max(60.0, 7.2 * max(len(line) for line in lines) + 18.0), 14.0 * len(lines) + 12.0)


STANDIN_MAX_CHARS = 16
STANDIN_HEIGHT = 20.0


def standin_name(graph, labels: Mapping[str, str], shared: str) -> str:
    """What a stand-in of ``shared`` (a leaf's AccumulateGrad, drawn next to each of its uses)
    says: the leaf's name, its last dotted parts when long ('layer4.1.conv2.weight' ->
    'conv2.weight')."""
    leaf = next((n for n in (*graph.successors(shared), *graph.predecessors(shared))
                 if graph.nodes[n].get("kind") in LEAF_KINDS), shared)
    name = labels.get(leaf, leaf).split("\n")[0]
    parts = name.split(".")
    while len(parts) > 1 and len(".".join(parts)) > STANDIN_MAX_CHARS:
        parts = parts[1:]
    return ".".join(parts)


def standin_size(names) -> tuple[float, float]:
    """One size for every stand-in of a graph (the layout takes one): as wide as the longest name."""
    longest = max((len(n) for n in names), default=4)
    return max(46.0, 6.2 * min(longest, STANDIN_MAX_CHARS + 4) + 12.0), STANDIN_HEIGHT
