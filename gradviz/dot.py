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
_FILL = re.compile(r'fillcolor\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s\]]+))')
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
        label = fill = ""
        if attrs:
            lm = _LABEL.search(attrs)
            if lm:
                label = (lm.group(1) if lm.group(1) is not None else lm.group(2)).strip()
            fm = _FILL.search(attrs)
            if fm:
                fill = fm.group(1) if fm.group(1) is not None else fm.group(2)
        g.add_node(a, label=label, fillcolor=fill)
    return g


class DotFormatError(ValueError):
    """A DOT file that is not an autograd graph as torchviz draws it."""


_SHAPE = re.compile(r"\(([\d,\s]*)\)\s*$")


def _tensor_label(label):
    """torchviz labels a tensor ``name\n (64, 3, 7, 7)`` (``(1000)`` for one dimension)."""
    name, _, rest = label.replace("\\n", "\n").rpartition("\n")
    m = _SHAPE.search(rest if name or rest.strip().startswith("(") else label)
    shape = tuple(int(x) for x in m.group(1).replace(",", " ").split()) if m else ()
    return name.strip() or None, shape


def trace_from_dot(text):
    """A Trace of a torchviz ``make_dot`` graph, for ``gradviz open model.dot``: its grad_fn and
    AccumulateGrad nodes, the parameters they feed (light blue: ``name (shape)``) and the edges,
    turned to the direction gradients flow. A drawing holds no values and no backward pass: the
    graph is shown to be looked at, searched and collapsed, not stepped."""
    from . import events as ev
    from .trace import Trace
    import networkx as nx
    if not re.match(r"\s*(?:strict\s+)?digraph\b[^{]*\{", text) or "}" not in text:
        raise DotFormatError("not a DOT digraph (it should start with 'digraph {' as torchviz writes it)")
    g = read_dot(text)
    if g.number_of_nodes() == 0:
        raise DotFormatError("no nodes found: not a DOT graph as torchviz writes it")
    try:
        order = list(nx.topological_sort(g))  # inputs before the nodes that use them
    except nx.NetworkXUnfeasible:
        raise DotFormatError("the graph has a cycle: not an autograd graph") from None
    ids = {key: i + 1 for i, key in enumerate(order)}
    tensors, events = {}, [ev.IterationStarted(0)]
    for key in order:
        d = g.nodes[key]
        label, fill = d.get("label", ""), d.get("fillcolor", "")
        if fill in ("lightblue", "orange", "darkolivegreen1") or "\n" in label.replace("\\n", "\n"):
            if fill == "lightblue":  # a leaf that requires grad: a parameter when it has a name
                name, shape = _tensor_label(label)
                tensors[key] = ids[key]
                events.append(ev.TensorDescribed(ids[key], name, shape, "", True,
                                                 "parameter" if name else "leaf"))
            continue  # the output (darkolivegreen1) and saved tensors (orange) are not graph nodes
        feeds = [u for u in g.predecessors(key) if u not in tensors and u in ids]
        feeds = [u for u in feeds if g.nodes[u].get("fillcolor", "") not in ("orange", "darkolivegreen1")]
        leaf = next((u for u in g.predecessors(key) if u in tensors), None)
        if label == "AccumulateGrad" or (leaf is not None and not feeds):
            shape = next((e.shape for e in events if type(e) is ev.TensorDescribed and e.id == tensors.get(leaf)),
                         ())
            events.append(ev.NodeCreated(ids[key], "AccumulateGrad", "accumulate_grad", 0, (),
                                         tensors.get(leaf), (), shape))
        else:
            events.append(ev.NodeCreated(ids[key], label or str(key), "grad_fn", 0, (), None,
                                         tuple(ids[u] for u in feeds)))
    if not any(type(e) is ev.NodeCreated for e in events):
        raise DotFormatError("no autograd nodes found: not a graph as torchviz's make_dot draws it")
    trace = Trace()
    trace.extend(events)
    return trace


def load_dot(path):
    """``trace_from_dot`` of a file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return trace_from_dot(f.read())
