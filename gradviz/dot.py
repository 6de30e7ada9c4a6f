"""Graphviz DOT: writing a trace's graph (``gradviz export``) and reading torchviz's ``make_dot``
output (real PyTorch graphs, for layout tests and benchmarks)."""
from __future__ import annotations

import re

_STYLE = {
    "grad_fn": 'shape=box, style="rounded,filled", fillcolor="#dbe8f7"',
    "accumulate_grad": 'shape=box, style="rounded,filled", fillcolor="#e8e8e8"',
    "parameter": 'shape=box, style=filled, fillcolor="#cde8c4"',
    "leaf": 'shape=box, style=filled, fillcolor="#cde8c4"',
    "frozen": 'shape=box, style="filled,dashed", fillcolor="#f2f2f2", fontcolor="#888888"',
}


def _quote(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph, name="gradviz"):
    lines = [f"digraph {_quote(name)} {{", '  node [fontname="DejaVu Sans", fontsize=10];']
    for key, d in graph.nodes(data=True):
        label = d.get("label") or key
        shape = d.get("shape")
        if d.get("kind") in ("parameter", "leaf", "frozen") and shape is not None:
            label = f"{label}\n{tuple(shape)}"
        lines.append(f"  {_quote(key)} [label={_quote(label)}, {_STYLE.get(d.get('kind'), 'shape=box')}];")
    for u, v, d in graph.edges(data=True):
        style = "" if d.get("grad", True) else ' [style=dashed, color="#aaaaaa"]'
        lines.append(f"  {_quote(u)} -> {_quote(v)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_ID = r'(?:"(?:[^"\\]|\\.)*"|[\w.]+)'
_STMT = re.compile(rf'({_ID})\s*(?:->\s*({_ID}))?\s*(?:\[((?:[^\]"]|"(?:[^"\\]|\\.)*")*)\])?')
_LABEL = re.compile(r'label\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s\]]+))')
_KEYWORDS = {"digraph", "graph", "node", "edge", "strict", "subgraph"}


def _unquote(s):
    return s[1:-1].replace('\\"', '"') if s.startswith('"') else s


def read_dot(text):
    """A networkx DiGraph from a DOT file as torchviz writes it (statements ``id [label=...]`` and
    ``a -> b``, labels possibly spanning lines). Edges keep torchviz's direction: from a node to the
    node that consumes its output."""
    import networkx as nx
    g = nx.DiGraph()
    body = text[text.index("{") + 1:text.rindex("}")] if "{" in text else text
    for m in _STMT.finditer(body):
        a, b, attrs = m.group(1), m.group(2), m.group(3)
        if a in _KEYWORDS:
            continue
        a = _unquote(a)
        if b is not None:
            g.add_edge(a, _unquote(b))
            continue
        label = ""
        if attrs:
            lm = _LABEL.search(attrs)
            if lm:
                label = (lm.group(1) if lm.group(1) is not None else lm.group(2)).strip()
        g.add_node(a, label=label)
    return g
