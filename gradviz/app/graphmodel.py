"""What the graph view draws, as plain data (no Qt): modules collapsed into one box each, search
matches, and the gradients that edges and leaves carried in a backward pass.

``GraphModel(state)`` wraps an ``AppState``: it keeps which module scopes are collapsed and the
current search, and gives the graph to draw (``drawing()``) with its labels and layout. The
functions below it work on any trace and graph, so they are tested without a window."""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from gradviz.app.jobs import start_job
from gradviz.app.layouts import INLINE_LAYOUT_NODES, layout_graph
from gradviz.app.labels import LEAF_KINDS
from gradviz.trace.model import node_key

MODULE_PREFIX = "m:"


# -- module scopes --------------------------------------------------------------------------------
def node_scope(data):
    """A node's module scope; a frozen parameter (recorded without one) takes it from its name."""
    scope = data.get("scope") or ""
    if not scope and data.get("kind") == "frozen" and "." in (data.get("name") or ""):
        scope = data["name"].rsplit(".", 1)[0]
    return scope


def _inside(scope, outer):
    return scope == outer or scope.startswith(outer + ".")


def module_scopes(graph):
    """The scopes a user can collapse: every prefix level ('layer1', 'layer1.0',
    'layer1.0.conv1') that holds at least two nodes, sorted."""
    return sorted(s for s, c in _scope_counts(graph).items() if c >= 2)


# A graph over this many nodes opens with its modules collapsed (the window's first view): laid
# out whole, 150 nodes of an autograd graph make 25-40 layers, which fit a 570-pixel-high graph
# pane only below a third of full size, where the 9-point labels are 3 pixels high.
MODULE_VIEW_NODES = 150


def _scope_counts(graph):
    counts = {}
    for _, d in graph.nodes(data=True):
        s = node_scope(d)
        parts = s.split(".") if s else []
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            counts[prefix] = counts.get(prefix, 0) + 1
    return counts


def focus_scopes(graph, key=None, limit=MODULE_VIEW_NODES):
    """The scopes to collapse so that ``graph`` reads as its modules with ``key`` (the paused
    node) opened: every top-level module is a box, except the one holding ``key``, which opens
    into its child modules as boxes, and so on down until the opened module holds at most
    ``limit`` nodes, which then shows all its nodes (a debugger's focus and context: resnet18 at
    first sight is conv1, bn1, ..., layer1..layer4, avgpool, fc and the loss; stepping into
    layer4.1 opens layer4 into layer4.0 and layer4.1, and layer4.1 into its nodes)."""
    counts = _scope_counts(graph)
    scopes = [s for s, c in counts.items() if c >= 2]
    path = []
    if key is not None and key in graph:
        path = [s for s in reversed(enclosing_scopes(node_scope(graph.nodes[key]))) if s in counts]
    collapsed, parent = set(), ""
    for depth in range(len(path) + 1):
        opened = path[depth] if depth < len(path) else None
        collapsed.update(s for s in scopes if s.count(".") == depth and (not parent or s.startswith(parent + "."))
                         and s != opened)
        if opened is None or counts[opened] <= limit:
            break
        parent = opened
    return frozenset(collapsed)


def enclosing_scopes(scope):
    """'layer1.0.conv1' -> ['layer1.0.conv1', 'layer1.0', 'layer1'] (innermost first)."""
    parts = scope.split(".") if scope else []
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def box_key(scope):
    return MODULE_PREFIX + scope


def collapse(graph, scopes):
    """``graph`` with every node inside one of ``scopes`` replaced by one box per scope (an outer
    scope wins over one inside it). A box is a node ``m:SCOPE`` of kind ``module`` labelled with
    the scope and its node count; edges are merged (``orig`` lists the edges each one stands
    for; ``grad`` is whether any of them carries a gradient), edges inside a box are dropped.
    Returns ``(graph2, members)``: members maps a box key to its original keys, in graph order."""
    scopes = sorted(set(scopes), key=lambda s: (s.count("."), s))
    owner = {}
    for k, d in graph.nodes(data=True):
        s = node_scope(d)
        for outer in scopes:
            if s and _inside(s, outer):
                owner[k] = box_key(outer)
                break
    members = {}
    for k in graph.nodes:
        if k in owner:
            members.setdefault(owner[k], []).append(k)
    g2 = nx.DiGraph()
    for k, d in graph.nodes(data=True):
        b = owner.get(k)
        if b is None:
            g2.add_node(k, **d)
        elif b not in g2:  # the box takes the place of its first member (keeps layouts stable)
            scope = b[len(MODULE_PREFIX):]
            n = len(members[b])
            g2.add_node(b, op="", kind="module", scope=scope, name=scope, source="", shape=(),
                        label=f"{scope}\n{n} nodes", members=n)
    for u, v, d in graph.edges(data=True):
        a, b = owner.get(u, u), owner.get(v, v)
        if a == b:
            continue
        if g2.has_edge(a, b):
            e = g2.edges[a, b]
            e["orig"].append((u, v))
            e["grad"] = e["grad"] or d.get("grad", True)
        else:
            g2.add_edge(a, b, orig=[(u, v)], grad=d.get("grad", True), index=d.get("index", 0))
    return g2, members


# -- search ---------------------------------------------------------------------------------------
def search(graph, labels, text, positions=None):
    """Keys of the nodes whose label, op, parameter name or scope contains ``text`` (any case), in
    reading order: by layout row then column when ``positions`` is given, else in graph order."""
    needle = text.strip().lower()
    if not needle:
        return []
    hits = []
    for i, (k, d) in enumerate(graph.nodes(data=True)):
        fields = (labels.get(k, ""), d.get("op") or "", d.get("name") or "", node_scope(d))
        if any(needle in f.lower() for f in fields):
            hits.append((i, k))
    if positions is not None:
        far = (float("inf"), float("inf"))
        hits.sort(key=lambda ik: (*positions.get(ik[1], far)[::-1], ik[0]))
    return [k for _, k in hits]


# -- gradients on the graph -----------------------------------------------------------------------
def _fmt_shape(shape):
    return "[" + ",".join(str(s) for s in shape) + "]"


def _fmt_norm(norm):
    return f"{norm:.3g}"


def grad_label(values):
    """'shape · ‖g‖=norm' of one gradient, or of the sum of several that took the same edge."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    nan, inf = sum(v.summary.nan for v in values), sum(v.summary.inf for v in values)
    if nan or inf:  # said, not only a norm of nan
        bad = ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)
        return f"{_fmt_shape(values[0].shape)} · ⚠ {bad}"
    if len(values) == 1:
        v = values[0]
        return f"{_fmt_shape(v.shape)} · ‖g‖={_fmt_norm(v.summary.l2)}"
    if all(v.array is not None for v in values):
        import numpy as np
        total = sum(v.array.astype(np.complex128 if np.iscomplexobj(v.array) else np.float64) for v in values)
        return f"{_fmt_shape(total.shape)} · ‖g‖={_fmt_norm(float(np.linalg.norm(total)))}"
    return f"{_fmt_shape(values[0].shape)} · ‖g‖≤{_fmt_norm(sum(v.summary.l2 for v in values))}"


def _node_id(key):
    return int(key[1:]) if key[:1] == "n" and key[1:].isdigit() else None


def _tensor_id(key):
    return int(key[1:]) if key[:1] == "t" and key[1:].isdigit() else None


def _get_pass(trace, pass_index):
    if not trace.passes:
        return None
    try:
        return trace.passes[pass_index] if pass_index < 0 else trace._pass(pass_index)
    except (IndexError, KeyError):
        return None


def edge_labels(trace, graph, pass_index=-1):
    """``{(u, v): 'shape · ‖g‖=norm'}`` for the edges of ``graph`` that carried a gradient in the
    backward pass ``pass_index`` (-1: the last): see :func:`edge_gradients`."""
    out = {}
    for edge, values in edge_gradients(trace, graph, pass_index).items():
        text = grad_label(values)
        if text:
            out[edge] = text
    return out


def edge_gradients(trace, graph, pass_index=-1):
    """``{(u, v): [Value, ...]}``: the gradients each edge of ``graph`` carried in the backward pass
    ``pass_index`` (-1: the last). An edge u -> v carries what u's backward put in its
    grad_inputs for each input whose next node is v (several when u uses v twice); the edge from
    an AccumulateGrad to its leaf carries the contribution added to the leaf's ``.grad``. An edge
    drawn to a stand-in carries its own use's share: the shares into one AccumulateGrad sum to
    what it adds to the leaf."""
    p = _get_pass(trace, pass_index)
    if p is None:
        return {}
    out = {}
    for nid, grad_inputs in p.grad_inputs.items():
        u = node_key(nid)
        if u not in graph:
            continue
        created = trace.nodes.get(nid)
        nexts = created.next_nodes if created is not None else ()
        by_target = {}
        for i, nxt in enumerate(nexts):
            if nxt is not None and i < len(grad_inputs):
                by_target.setdefault(node_key(nxt), []).append(grad_inputs[i])
        for v, values in by_target.items():
            values = [x for x in values if x is not None]
            if values and graph.has_edge(u, v):
                out[u, v] = values
    for tid, (contribution, _) in p.accumulated.items():
        for u, v in graph.in_edges(f"t{tid}"):
            if contribution is not None and graph.nodes[u].get("kind") == "accumulate_grad":
                out[u, v] = [contribution]
    return out


def leaf_grad_label(trace, key):
    """A leaf's ``.grad`` after the last pass that reached it: its values when it has at most 4
    elements (and they were kept), else its norm (nan or inf when it holds one), with ``(pass k)``
    when that pass is not the latest (the .grad may have been zeroed since); None if it never got
    one."""
    tid = _tensor_id(key)
    if tid is None:
        return None
    p = trace.last_accumulated(tid)
    if p is None:
        return None
    grad = p.accumulated[tid][1]
    if grad is None:
        return None
    s = grad.summary
    older = f" (pass {p.index})" if p is not trace.passes[-1] else ""
    if not s.finite:
        bad = ", ".join(f"{n} {what}" for n, what in ((s.nan, "NaN"), (s.inf, "Inf")) if n)
        return f".grad ⚠ {bad}{older}"
    if grad.array is not None and s.numel <= 4:
        vals = ", ".join(f"{x:.4g}" for x in grad.array.ravel().tolist())
        return f".grad = [{vals}]{older}"
    return f".grad ‖g‖={_fmt_norm(s.l2)}{older}"


def root_keys(trace, graph=None):
    """The roots of the latest backward pass; with ``graph``, when those are not in it (its
    backward has not started yet), the grad_fn nodes nothing points to (the outputs so far)."""
    keys = [node_key(r) for r in trace.passes[-1].roots] if trace.passes else []
    if graph is None:
        return keys
    keys = [k for k in keys if k in graph]
    if not keys:
        keys = [k for k, d in graph.nodes(data=True)
                if d.get("kind") == "grad_fn" and graph.in_degree(k) == 0]
    return keys


# -- the model the view renders -------------------------------------------------------------------
def _collapsed_drawing(graph, labels, collapsed):
    g2, members = collapse(graph, collapsed)
    labels2 = {k: labels.get(k, k) for k in g2 if k not in members}
    labels2.update({k: g2.nodes[k]["label"] for k in members})
    lay = layout_graph(g2, labels2)
    owner = {k: b for b, ks in members.items() for k in ks}
    return Drawing(g2, labels2, lay, members, owner)


@dataclass
class Drawing:
    """The graph to draw: its nodes (boxes for collapsed modules), labels, layout, and which
    original nodes each box stands for (``owner``: original key -> box key)."""

    graph: object
    labels: dict
    layout: object
    members: dict = field(default_factory=dict)
    owner: dict = field(default_factory=dict)

    def drawn_key(self, key):
        return self.owner.get(key, key)


class GraphModel:
    """The view's state beside an ``AppState``: collapsed module scopes and the search."""

    def __init__(self, state):
        self.state = state
        self.collapsed = frozenset()
        self.query = ""
        self.matches = []
        self.match_index = -1
        self._drawing = None
        self._made_from = None
        self._job = None  # a collapsed graph being laid out off the GUI thread (key: its made_from)
        # The window's first view: while on, a large graph shows its modules as boxes with the
        # paused node's module opened (focus_scopes), until the user collapses or expands one.
        self.auto_focus = False

    # -- collapsing --
    def scopes(self):
        g = self.state.graph
        return module_scopes(g) if g is not None else []

    def update_focus(self):
        """Apply the first view's rule for the graph shown and the paused node (see
        ``auto_focus``); returns whether what is collapsed changed (then draw anew)."""
        st = self.state
        if not self.auto_focus or st.graph is None:
            return False
        want = focus_scopes(st.graph, st.current) if st.graph.number_of_nodes() > MODULE_VIEW_NODES \
            else frozenset()
        if want == self.collapsed:
            return False
        self.collapsed = want
        return True

    def set_collapsed(self, scopes):
        """Collapse exactly ``scopes`` (the user's choice: the first view's rule stops); returns
        whether that changed anything."""
        self.auto_focus = False
        scopes = frozenset(scopes)
        if scopes == self.collapsed:
            return False
        self.collapsed = scopes
        return True

    def collapse(self, scope):
        return self.set_collapsed(self.collapsed | {scope})

    def expand(self, scope):
        """Expand ``scope`` (a scope or its box key) and any collapsed scope inside it."""
        if scope.startswith(MODULE_PREFIX):
            scope = scope[len(MODULE_PREFIX):]
        return self.set_collapsed({s for s in self.collapsed if not _inside(s, scope)})

    def drawing(self):
        """The graph to draw now (recomputed only when the state's layout or the collapsed set
        changed; with nothing collapsed it is the state's own graph and layout). A large graph
        with modules collapsed is laid out in a worker thread: meanwhile the last drawing stays
        (``laying_out`` is True) and ``take_ready()`` says when the new one can be drawn."""
        st = self.state
        made_from = (st.layout, self.collapsed)
        if self._made_from is not None and self._made_from[0] is made_from[0] and self._made_from[1] == made_from[1]:
            return self._drawing
        if st.layout is None:
            d = Drawing(nx.DiGraph(), {}, None)
        elif not self.collapsed:
            d = Drawing(st.graph, st.labels, st.layout)
        else:
            if st.graph.number_of_nodes() <= INLINE_LAYOUT_NODES:
                d = _collapsed_drawing(st.graph, st.labels, self.collapsed)
            else:
                job = self._job
                if job is None or job.key[0] is not made_from[0] or job.key[1] != made_from[1]:
                    self._job = start_job(made_from, _collapsed_drawing, st.graph, dict(st.labels),
                                          self.collapsed, name="gradviz-collapse")
                if self._drawing is None:
                    self._drawing = Drawing(st.graph, st.labels, st.layout)
                return self._drawing  # the last drawing, until the worker is done
        self._job = None
        self._drawing, self._made_from = d, made_from
        return d

    @property
    def laying_out(self):
        return self._job is not None

    def take_ready(self, wait=None):
        """True once a collapsed graph laid out in the worker thread is taken in (draw it anew);
        ``wait``: seconds to block for it (tests, export)."""
        job = self._job
        if job is None:
            return False
        if wait is not None:
            job.wait(wait)
        if not job.done:
            return False
        self._job = None
        drawing = job.result()  # raises what the layout raised
        st = self.state
        if job.key[0] is not st.layout or job.key[1] != self.collapsed:
            return False  # overtaken: the next drawing() starts anew
        self._drawing, self._made_from = drawing, job.key
        return True

    # -- search --
    def search(self, text):
        """Match ``text`` against the whole graph (nodes inside a collapsed box too); returns the
        matches and makes the first one current."""
        st = self.state
        self.query = text
        if st.graph is None:
            self.matches = []
        else:
            self.matches = search(st.graph, st.labels, text,
                                  st.layout.positions if st.layout is not None else None)
        self.match_index = 0 if self.matches else -1
        return self.matches

    @property
    def current_match(self):
        return self.matches[self.match_index] if self.matches else None

    def next_match(self, step=1):
        if not self.matches:
            return None
        self.match_index = (self.match_index + step) % len(self.matches)
        return self.matches[self.match_index]

    # -- what the last pass carried --
    def _pass_index(self):
        """The last backward pass of the iteration shown (an older pass ran on another graph)."""
        st = self.state
        trace = st.trace
        place = trace.last_pass_of(st.iteration) if st.iteration is not None else None
        return None if place is None else place - len(trace.passes)

    def edge_labels(self):
        i = self._pass_index()
        g = self.state.graph
        return {} if i is None or g is None else edge_labels(self.state.trace, g, i)

    def leaf_grads(self):
        g = self.state.graph
        if g is None:
            return {}
        out = {}
        for k, d in g.nodes(data=True):
            if d.get("kind") in LEAF_KINDS:
                text = leaf_grad_label(self.state.trace, k)
                if text:
                    out[k] = text
        return out

    def roots(self):
        return root_keys(self.state.trace, self.state.graph)

    def overlay(self):
        """What a diagnosis (``state.diagnosis``) or a diff view's state draws over the graph: a
        ``gradviz.app.diagnosis.Overlay``, or None."""
        st = self.state
        source = getattr(st, "diagnosis", st)
        make = getattr(source, "overlay", None)
        return make(st.graph) if make is not None and st.graph is not None else None
