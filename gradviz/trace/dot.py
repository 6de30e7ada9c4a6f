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
    """The graph as Graphviz DOT. Besides what Graphviz draws, each node and edge carries what
    ``gradviz open`` reads back (``gv_*`` attributes, which Graphviz ignores): the node's kind, op,
    scope, tensor name, shape and dtype, the edge's place among the node's next nodes. Edges run as
    gradients flow: from a node to the nodes it hands gradients to."""
    lines = [f"digraph {_quote(name)} {{", '  node [fontname="DejaVu Sans", fontsize=10];']
    for key, d in graph.nodes(data=True):
        label = d.get("label") or key
        shape = d.get("shape")
        if d.get("kind") in ("parameter", "leaf", "frozen") and shape is not None:
            label = f"{label}\n{tuple(shape)}"
        extra = "".join(f", gv_{k}={_quote(v)}" for k, v in _gv_attrs(d))
        if d.get("nonfinite"):  # a value holding NaN or Inf: said, and drawn red
            nan, inf = d["nonfinite"]
            label += "\n⚠ " + ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)
            extra += ', color="#cc0000", fontcolor="#cc0000", penwidth=2'
        lines.append(f"  {_quote(key)} [label={_quote(label)}, {_STYLE.get(d.get('kind'), 'shape=box')}{extra}];")
    for u, v, d in graph.edges(data=True):
        attrs = [] if d.get("grad", True) else ['style=dashed', 'color="#aaaaaa"', 'gv_grad="0"']
        if d.get("index") is not None:
            attrs.append(f'gv_index="{int(d["index"])}"')
        lines.append(f"  {_quote(u)} -> {_quote(v)}{' [' + ', '.join(attrs) + ']' if attrs else ''};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _gv_attrs(d):
    kind = d.get("kind")
    if not kind:
        return []
    out = [("kind", kind)]
    if d.get("op"):
        out.append(("op", d["op"]))
    if d.get("name"):
        out.append(("name", d["name"]))
    if d.get("scope"):
        out.append(("scope", d["scope"]))
    if d.get("shape") is not None:
        out.append(("shape", ",".join(str(int(x)) for x in d["shape"])))
    if d.get("dtype"):
        out.append(("dtype", d["dtype"]))
    if d.get("iteration") is not None:
        out.append(("iteration", int(d["iteration"])))
    return out


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|<[^>]*>|->|--|[\w.]+|[\[\]{}=;,:]|\S', re.S)
_COMMENT = re.compile(r'("(?:[^"\\]|\\.)*")|//[^\n]*|/\*.*?\*/|^[ \t]*#[^\n]*', re.S | re.M)
_KEYWORDS = {"digraph", "graph", "node", "edge", "strict", "subgraph"}


def _unquote(s):
    return s[1:-1].replace('\\"', '"') if s.startswith('"') else s


def _is_id(tok):
    return tok[:1] == '"' or tok[:1] == "<" or re.match(r"[\w.]", tok) is not None


def _attrs(tokens, i):
    """The ``[a=b, c=d][...]`` lists from token ``i``: (dict, index after them)."""
    out = {}
    while i < len(tokens) and tokens[i] == "[":
        i += 1
        while i < len(tokens) and tokens[i] != "]":
            if _is_id(tokens[i]) and i + 2 < len(tokens) and tokens[i + 1] == "=":
                out[_unquote(tokens[i])] = _unquote(tokens[i + 2])
                i += 3
            else:
                i += 1
        i += 1
    return out, i


def read_dot(text):
    """A networkx DiGraph from a DOT digraph as torchviz writes it: node statements ``id [label=..,
    fillcolor=..]`` (a label possibly spanning lines; each attribute kept as it was last given,
    and every fill an id was given in ``fills``), edges ``a -> b -> c [..]`` (kept with their
    attributes), comments, ``key=value`` and ``graph/node/edge [..]`` statements and subgraph
    names skipped. Edges keep torchviz's direction: from a node to the node that consumes its
    output."""
    import networkx as nx
    g = nx.DiGraph()
    text = _COMMENT.sub(lambda m: m.group(1) or " ", text)
    body = text[text.index("{") + 1:text.rindex("}")] if "{" in text else text
    tokens = _TOKEN.findall(body)
    i, n = 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if tok in _KEYWORDS:
            i += 1
            if tok == "subgraph" and i < n and _is_id(tokens[i]):
                i += 1  # its name
            elif tok in ("graph", "node", "edge"):
                _, i = _attrs(tokens, i)
            continue
        if not _is_id(tok):
            i += 1
            continue
        if i + 2 < n and tokens[i + 1] == "=":  # a graph attribute: rankdir=LR
            i += 3
            continue
        ids = [_unquote(tok)]
        i += 1
        while i + 1 < n and tokens[i] in ("->", "--") and _is_id(tokens[i + 1]):
            ids.append(_unquote(tokens[i + 1]))
            i += 2
        attrs, i = _attrs(tokens, i)
        if len(ids) > 1:
            for a, b in zip(ids, ids[1:]):
                g.add_edge(a, b, **attrs)
            continue
        a = ids[0]
        if a not in g:
            g.add_node(a, label="", fillcolor="", fills=())
        d = g.nodes[a]
        d.setdefault("label", "")
        d.setdefault("fillcolor", "")
        if "label" in attrs:
            d["label"] = attrs["label"].strip()
        if "fillcolor" in attrs:
            d["fillcolor"] = attrs["fillcolor"]
            d["fills"] = tuple(d.get("fills", ())) + (attrs["fillcolor"],)
        d.update((k, v) for k, v in attrs.items() if k.startswith("gv_"))  # gradviz's own (to_dot)
    return g


class DotFormatError(ValueError):
    """A DOT file that is not an autograd graph as torchviz draws it."""


_TENSOR_FILLS = {"lightblue", "orange", "darkolivegreen1", "darkolivegreen3"}
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
    from gradviz import events as ev
    from gradviz.trace.model import Trace
    import networkx as nx
    if not re.match(r"\s*(?:strict\s+)?digraph\b[^{]*\{", text):
        raise DotFormatError("not a DOT digraph (it should start with 'digraph {' as torchviz writes it)")
    if "}" not in re.sub(r'"(?:[^"\\]|\\.)*"', '""', _COMMENT.sub(lambda m: m.group(1) or " ", text)):
        raise DotFormatError("the DOT digraph is not closed: its closing '}' is missing (a file cut short?)")
    g = read_dot(text)
    if any("gv_kind" in d for _, d in g.nodes(data=True)):
        return _trace_from_gradviz_dot(g)
    # torchviz links a saved tensor to its node with dir=none: not a part of the graph's flow.
    g.remove_edges_from([(u, v) for u, v, d in g.edges(data=True) if d.get("dir") == "none"])
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
        label, fills = d.get("label", ""), set(d.get("fills", ()))
        # torchviz's fills tell tensors apart: lightblue a leaf that requires grad (also when the
        # same tensor is drawn again orange, as saved); orange a saved tensor; darkolivegreen an
        # output. A node without one of those is a grad_fn (its label's first line is its name).
        if "lightblue" in fills:  # a parameter when it has a name
            name, shape = _tensor_label(label)
            tensors[key] = ids[key]
            events.append(ev.TensorDescribed(ids[key], name, shape, "", True, "parameter" if name else "leaf"))
            continue
        if fills & _TENSOR_FILLS:
            continue
        feeds = [u for u in g.predecessors(key) if u not in tensors and u in ids and
                 not set(g.nodes[u].get("fills", ())) & _TENSOR_FILLS]
        leaf = next((u for u in g.predecessors(key) if u in tensors), None)
        if label == "AccumulateGrad" or (leaf is not None and not feeds):
            shape = next((e.shape for e in events if type(e) is ev.TensorDescribed and e.id == tensors.get(leaf)),
                         ())
            events.append(ev.NodeCreated(ids[key], "AccumulateGrad", "accumulate_grad", 0, (),
                                         tensors.get(leaf), (), shape))
        else:
            op = label.replace("\\n", "\n").split("\n")[0].strip() or str(key)
            events.append(ev.NodeCreated(ids[key], op, "grad_fn", 0, (), None, tuple(ids[u] for u in feeds)))
    if not any(type(e) is ev.NodeCreated for e in events):
        raise DotFormatError("no autograd nodes found: not a graph as torchviz's make_dot draws it")
    trace = Trace()
    trace.extend(events)
    return trace


_TENSOR_KINDS = ("parameter", "leaf", "frozen", "input")


def _key_id(key, prefix, fallback):
    return int(key[1:]) if key[:1] == prefix and key[1:].isdigit() else fallback


def _trace_from_gradviz_dot(g):
    """The Trace of a graph gradviz wrote (``to_dot``): its nodes with their kinds, ops, scopes,
    names, shapes and dtypes, and its edges as they were, from a node to the nodes it hands
    gradients to. Like any drawing, it holds no values and no backward pass."""
    from gradviz import events as ev
    from gradviz.trace.model import Trace
    import networkx as nx

    def shape_of(d):
        text = d.get("gv_shape", "")
        return tuple(int(x) for x in text.split(",") if x.strip().lstrip("-").isdigit())

    try:
        order = list(reversed(list(nx.topological_sort(g))))  # a node after those it hands gradients to
    except nx.NetworkXUnfeasible:
        raise DotFormatError("the graph has a cycle: not an autograd graph") from None
    ids, used = {}, set()
    for key in order:  # the ids the keys name ('n5', 't3'), else fresh ones
        kind = g.nodes[key].get("gv_kind", "")
        i = _key_id(key, "t" if kind in _TENSOR_KINDS else "n", None)
        ids[key] = i if i is not None and (kind in _TENSOR_KINDS, i) not in used else None
        if ids[key] is not None:
            used.add((kind in _TENSOR_KINDS, i))
    top = max((i for i in ids.values() if i is not None), default=0)
    for key in order:
        if ids[key] is None:
            top += 1
            ids[key] = top
    events = [ev.IterationStarted(0)]
    tensors = [k for k in order if g.nodes[k].get("gv_kind") in _TENSOR_KINDS]
    for key in tensors:
        d = g.nodes[key]
        kind = d["gv_kind"]
        events.append(ev.TensorDescribed(ids[key], d.get("gv_name") or None, shape_of(d), d.get("gv_dtype", ""),
                                         kind in ("parameter", "leaf"), kind))
    for key in order:
        d = g.nodes[key]
        kind = d.get("gv_kind")
        if kind in _TENSOR_KINDS:
            continue
        kind = kind if kind in ("grad_fn", "accumulate_grad") else "grad_fn"
        label = d.get("label", "").replace("\\n", "\n").split("\n")[0].strip()
        op = d.get("gv_op") or label or key
        out = sorted(g.successors(key), key=lambda v: int(g.edges[key, v].get("gv_index", 0) or 0))
        iteration = int(d["gv_iteration"]) if d.get("gv_iteration", "").isdigit() else 0
        common = dict(output_shape=shape_of(d), output_dtype=d.get("gv_dtype", ""), scope=d.get("gv_scope", ""))
        if kind == "accumulate_grad":
            leaf = next((ids[v] for v in out if g.nodes[v].get("gv_kind") in _TENSOR_KINDS), None)
            events.append(ev.NodeCreated(ids[key], op, kind, iteration, () if leaf is None else (leaf,), leaf, (),
                                         **common))
            continue
        nexts = tuple(ids[v] for v in out if g.nodes[v].get("gv_kind") not in _TENSOR_KINDS)
        frozen = tuple(ids[v] for v in out if g.nodes[v].get("gv_kind") in _TENSOR_KINDS)
        events.append(ev.NodeCreated(ids[key], op, kind, iteration, frozen, None, nexts, **common))
    if not any(type(e) is ev.NodeCreated for e in events):
        raise DotFormatError("no autograd nodes found in this gradviz drawing")
    trace = Trace()
    trace.extend(events)
    return trace


def load_dot(path):
    """``trace_from_dot`` of a file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return trace_from_dot(f.read())
