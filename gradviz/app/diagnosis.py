"""What the graph shows of a diagnosis, as plain data (no Qt): the path from a NaN's (or an
exploding gradient's) origin to the node the user asked about, dead ReLU units and parameters whose
gradient has stayed zero, drawn over the graph as an ``Overlay`` of colours and badges.

``Diagnosis(state)`` sits beside an ``AppState`` (``state.diagnosis``): the graph view asks it for
the overlay and for the context-menu actions of a node."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from gradviz.app.ranks import bucket_badges
from gradviz.trace.diagnose import RELU_LIKE, NoOrigin, holds_nonfinite, largest_gradient

# Colours as '#rrggbb' (the view turns them into Qt's).
PATH = "#c0392b"          # the path's borders and edges
ORIGIN_FILL = "#f5b7b1"   # the origin itself
EXPLOSION = "#d35400"
DEAD_BADGE = "#b9770e"    # a ReLU-like node passing mostly zero gradient; a parameter's zero streak
DEAD_FRACTION = 0.5       # a ReLU-like node is marked from this fraction of zero gradient on
EXPLODING = 1e3           # the menu offers to trace an explosion from a gradient this large (plots.EXPLODING_MAX)


@dataclass
class Overlay:
    """Drawn over the graph's usual colours: ``fills`` and ``borders`` by node key, ``edges`` by
    (u, v), ``badges`` (key -> (text, colour)) drawn at a node's top right, ``legend``
    [(colour, text)] for the view to show."""

    fills: dict = field(default_factory=dict)
    borders: dict = field(default_factory=dict)
    edges: dict = field(default_factory=dict)
    badges: dict = field(default_factory=dict)
    legend: list = field(default_factory=list)


def path_edges(graph, keys):
    """The graph's edges between consecutive keys of a path, in either direction (a NaN travels
    forward from an input to its consumer, against the graph's edges, and backward along them)."""
    out = []
    for a, b in zip(keys, keys[1:]):
        if graph.has_edge(a, b):
            out.append((a, b))
        elif graph.has_edge(b, a):
            out.append((b, a))
    return out


def dead_badges(trace, graph):
    """key -> (text, colour): ReLU-like nodes of ``graph`` whose gradient was at least
    DEAD_FRACTION zero in the last pass that ran them, and parameters whose gradient has been zero
    for at least one iteration with a backward pass."""
    out = {}
    for key, d in graph.nodes(data=True):
        if key[0] != "n" or d.get("op") not in RELU_LIKE:
            continue
        p = trace.last_run(int(key[1:]))
        g = next((v for v in p.grad_inputs.get(int(key[1:]), ()) if v is not None), None) if p else None
        zeros = g.summary.zeros if g is not None else math.nan
        if zeros >= DEAD_FRACTION:
            out[key] = (f"{zeros:.0%} zero" if zeros < 1.0 else "dead: all zero", DEAD_BADGE)
    for key, streak in trace.zero_grad_streaks().items():
        if key in graph and streak.since >= 1:
            out[key] = (f"grad 0 for {streak.since} it." if streak.last_nonzero is not None
                        else f"grad never ≠ 0 ({streak.since} it.)", DEAD_BADGE)
    return out


class Diagnosis:
    """The origin the user asked for (``trace_origin``) and the overlay it draws."""

    def __init__(self, state):
        self.state = state
        self.origin = None  # gradviz.trace.diagnose.Origin
        self.message = ""
        self.show_dead = True

    def actions(self, key):
        """Context-menu actions for graph key ``key``: [(text, callable)]: to trace a NaN/Inf where
        one was recorded, an explosion where a gradient exceeded EXPLODING, to clear a path drawn."""
        if key is None or key[:1] not in ("n", "t") or not key[1:].isdigit():
            return []
        acts = []
        with self.state.lock:
            trace = self.state.trace
            if holds_nonfinite(trace, key):
                acts.append(("Trace NaN/Inf to its origin", lambda: self.trace_origin(key, "nan")))
            if largest_gradient(trace, key) > EXPLODING:
                acts.append(("Trace exploding gradient to its origin", lambda: self.trace_origin(key, "explosion")))
        if self.origin is not None:
            acts.append(("Clear the traced path", self.clear))
        return acts

    def trace_origin(self, key, what="nan", k=None):
        """Trace the NaN/Inf (``what='nan'``) or the exploding gradient (``'explosion'``) at ``key``
        to its origin; the path is drawn and ``message`` (and the state's) says what the origin did.
        Returns the ``Origin``, or None (``message`` says why)."""
        st = self.state
        trace = st.trace
        try:
            with st.lock:
                origin = trace.nan_origin(key) if what == "nan" else trace.explosion_origin(key, k)
        except (NoOrigin, KeyError, TypeError) as exc:
            self.origin = None
            self.message = f"No origin to show: {exc.args[0] if exc.args else exc}"
        else:
            self.origin = origin
            drawn = [s.key for s in origin.path if st.graph is not None and s.key in st.graph]
            hidden = len(origin.path) - len(drawn)
            elsewhere = f" ({hidden} of the path's {len(origin.path)} nodes are in another iteration's graph)"
            self.message = ("Origin: " if what == "nan" else "Explosion: ") + origin.explanation + \
                (elsewhere if hidden else "")
        st.message = self.message
        return self.origin

    def clear(self):
        self.origin = None
        self.message = ""

    def path_keys(self):
        return [] if self.origin is None else [s.key for s in self.origin.path]

    def overlay(self, graph=None):
        """The overlay for the graph shown (``graph``: default the state's)."""
        st = self.state
        graph = st.graph if graph is None else graph
        ov = Overlay()
        if graph is None:
            return ov
        if st.trace is not None and st.trace.passes:
            ov.badges.update(bucket_badges(st.trace, graph, st.iteration))  # DDP's all-reduces
        if self.show_dead and st.trace is not None and st.trace.passes:
            ov.badges.update(dead_badges(st.trace, graph))
        if self.origin is not None:
            colour = PATH if self.origin.what == "nan" else EXPLOSION
            keys = [k for k in self.path_keys() if k in graph]
            for k in keys:
                ov.borders[k] = colour
            if keys and keys[0] == self.origin.origin.key:
                ov.fills[keys[0]] = ORIGIN_FILL
                ov.badges[keys[0]] = ("origin", colour)
            for e in path_edges(graph, keys):
                ov.edges[e] = colour
            ov.legend = [(ORIGIN_FILL, "origin"), (colour, "its path")]
        return ov
