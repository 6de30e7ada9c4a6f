"""What the diff view shows, as plain data (no Qt): the union of two iterations' graphs (of one
recording or two), laid out as the app lays out a graph, each node coloured by where it is (only
in A, only in B) or, when in both, by the ratio of its gradient's norm (B over A) on a log scale.

``DiffState`` offers what a ``GraphView`` reads of an ``AppState`` (graph, layout, labels, the
selection; no debugger), so the ordinary view draws it."""
from __future__ import annotations

import math
from contextlib import nullcontext

import networkx as nx

from gradviz.app.diagnosis import Overlay
from gradviz.app.graphmodel import GraphModel
from gradviz.app.layouts import layout_graph
from gradviz.app.labels import node_label
from gradviz.trace.diff import default_iterations, diff

ONLY_A = "#f1a9a0"   # removed: in A, not in B
ONLY_B = "#a9dfbf"   # added: in B, not in A
ONLY_A_BORDER, ONLY_B_BORDER = "#b03a2e", "#1e8449"
NO_RATIO = "#e5e5e5"  # in both, no comparable gradient (none in one, NaN, both zero)
RATIO_SPAN = 10.0     # the colour scale saturates at x10 and /10
# The ratio scale, from /RATIO_SPAN through 1 to xRATIO_SPAN: blue (smaller in B), white, orange (larger).
_LOW, _MID, _HIGH = (0x3b, 0x74, 0xc4), (0xff, 0xff, 0xff), (0xe6, 0x7e, 0x22)


def ratio_colour(ratio):
    """'#rrggbb' for a norm ratio B/A on the diverging log scale; NO_RATIO for NaN."""
    if ratio is None or math.isnan(ratio):
        return NO_RATIO
    if ratio <= 0.0:
        t = -1.0
    elif ratio == math.inf:
        t = 1.0
    else:
        t = max(-1.0, min(1.0, math.log(ratio) / math.log(RATIO_SPAN)))
    end = _HIGH if t > 0 else _LOW
    a = abs(t)
    rgb = [round(m + (e - m) * a) for m, e in zip(_MID, end)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def ratio_text(ratio):
    if ratio is None or math.isnan(ratio):
        return ""
    return "×inf" if ratio == math.inf else f"×{ratio:.3g}"


def union_graph(d, trace_a, trace_b):
    """The graph of B with A's own nodes and edges added: keys are B's, and A's own nodes keep
    theirs (prefixed ``a:`` when A is another recording). Every node carries ``diff``: 'a', 'b'
    or 'both'."""
    ga = trace_a.iteration_graph(d.iteration_a)
    gb = trace_b.iteration_graph(d.iteration_b)
    same = trace_a is trace_b
    key_of = {}  # identity -> key in the union
    g = nx.DiGraph()
    for n in d.nodes:
        if n.key_b is not None:
            key = n.key_b
            g.add_node(key, **gb.nodes[key])
        else:
            key = n.key_a if same and n.key_a not in gb else f"a:{n.key_a}"
            g.add_node(key, **ga.nodes[n.key_a])
        g.nodes[key]["diff"] = n.where
        key_of[n.identity] = key
    ident_a = {n.key_a: n.identity for n in d.nodes if n.key_a is not None}
    ident_b = {n.key_b: n.identity for n in d.nodes if n.key_b is not None}
    for u, v, data in gb.edges(data=True):
        g.add_edge(key_of[ident_b[u]], key_of[ident_b[v]], **data)
    for u, v, data in ga.edges(data=True):
        ku, kv = key_of[ident_a[u]], key_of[ident_a[v]]
        if not g.has_edge(ku, kv):
            g.add_edge(ku, kv, **data)
    return g, key_of


class DiffGraphModel(GraphModel):
    """The graph view's model of a diff: no ``.grad`` captions under leaves (the recording's latest
    ``.grad`` is not the one of either iteration compared: the badges say how it changed)."""

    def leaf_grads(self):
        return {}


class DiffState:
    """Iteration ``iteration_b`` of ``trace_b`` (default: ``trace_a``) against iteration
    ``iteration_a`` of ``trace_a``, both defaulting as ``gradviz diff`` does."""

    def __init__(self, trace_a, iteration_a=None, trace_b=None, iteration_b=None):
        self.trace_a = trace_a
        self.trace_b = trace_a if trace_b is None else trace_b
        self.selected = None
        self.current = None
        self.live_pause = self.pause = None
        self.set_iterations(iteration_a, iteration_b)

    # -- what GraphView reads of an AppState --
    @property
    def trace(self):
        return self.trace_b

    @property
    def lock(self):
        return nullcontext()

    def ran(self):
        return set()

    def select(self, key):
        self.selected = key if key is None or key in self.graph else None

    # -- the diff --
    def set_iterations(self, iteration_a=None, iteration_b=None):
        """Compare these iterations (None: as ``gradviz diff`` chooses). Raises ValueError for an
        iteration the recording does not have."""
        if iteration_a is None or iteration_b is None:
            da, db = default_iterations(self.trace_a, None if self.trace_b is self.trace_a else self.trace_b)
            iteration_a = da if iteration_a is None else iteration_a
            iteration_b = db if iteration_b is None else iteration_b
        self.diff = d = diff(self.trace_a, iteration_a, self.trace_b, iteration_b)
        d.iteration_a, d.iteration_b = iteration_a, iteration_b
        self.iteration_a, self.iteration_b = iteration_a, iteration_b
        self.iteration = iteration_b
        self.graph, self._key_of = union_graph(d, self.trace_a, self.trace_b)
        self.labels = {k: node_label(data, k) for k, data in self.graph.nodes(data=True)}
        self.layout = layout_graph(self.graph, self.labels)
        self.node_of = {key: n for n in d.nodes for key in (self._key_of[n.identity],)}
        if self.selected not in self.graph:
            self.selected = None

    def overlay(self, graph=None):
        """Fills, borders and ratio badges for every node; edges only in A or B coloured."""
        ov = Overlay()
        for key, n in self.node_of.items():
            if n.where == "a":
                ov.fills[key], ov.borders[key] = ONLY_A, ONLY_A_BORDER
                ov.badges[key] = ("only in A", ONLY_A_BORDER)
            elif n.where == "b":
                ov.fills[key], ov.borders[key] = ONLY_B, ONLY_B_BORDER
                ov.badges[key] = ("only in B", ONLY_B_BORDER)
            else:
                ov.fills[key] = ratio_colour(n.ratio)
                text = ratio_text(n.ratio)
                if text:
                    ov.badges[key] = (text, "#404040")
        d = self.diff
        for edges, colour in ((d.edges_only_a, ONLY_A_BORDER), (d.edges_only_b, ONLY_B_BORDER)):
            for u, v in edges:
                ov.edges[self._key_of[u], self._key_of[v]] = colour
        ov.legend = [(ONLY_A, f"only in A ({d.label_a})"), (ONLY_B, f"only in B ({d.label_b})"),
                     (ratio_colour(1 / RATIO_SPAN), f"‖grad‖ B/A ≤ /{RATIO_SPAN:g}"), (ratio_colour(1.0), "×1"),
                     (ratio_colour(RATIO_SPAN), f"≥ ×{RATIO_SPAN:g}"), (NO_RATIO, "no ratio")]
        return ov

    def summary(self):
        return self.diff.summary_line()
