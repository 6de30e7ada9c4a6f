"""Layered (Sugiyama-style) layout of autograd graphs, computed in the core (no Qt).

``layout(graph)`` places the nodes of a networkx DiGraph in horizontal layers with every edge
pointing down: the sources at the top (for a graph whose edges follow the gradient, the loss's
``grad_fn``; for torchviz's direction, the leaf tensors). The classic four phases, each picked to
be fast in Python on graphs of thousands of nodes. A transformer's autograd graph has ~5,000 nodes
in ~2,800 layers, so whatever runs per layer or per node in Python must be cheap and whatever
touches all edges at once is numpy:

1. **Cycles.** Autograd graphs are DAGs, but a graph from elsewhere may not be. A Kahn topological
   sort that, when stuck, takes the first unplaced node as if it were a source; every edge that then
   points backwards is laid out reversed (listed in ``Layout.reversed_edges``, still drawn from u
   to v); self-loops are dropped. A cycle thus costs O(V + E), never a hang.
2. **Layering.** Longest path from the sources, then block moves that shorten edges (a cheap
   stand-in for Graphviz's network simplex; same total edge length as dot on the ResNet-18 and
   transformer graphs). Edges spanning several layers get a dummy node in each layer they cross.
3. **Crossing reduction.** An initial order from a depth-first walk of the layered graph (no
   crossings for a tree, few for an autograd graph: a tree plus residual and shared edges), then
   alternating down/up barycenter sweeps and adjacent transpositions (Gansner et al.) on the
   layers next to gaps that still have crossings. Crossings are counted per gap between layers by
   a vectorised inversion count (``_segment_crossings``); the count picks the best order, decides
   when to stop and is the reported ``Layout.crossings``.
4. **Coordinates.** y from the layer (each layer as tall as its tallest box). x by an iterative
   least-squares balancing vectorised over all nodes: each node is pulled to the weighted mean of
   its neighbours (segments of long edges weigh most, and weights grow as a segment gets closer
   to vertical, so chains and long edges come out straight), then every layer is made overlap-free
   again by an isotonic projection that keeps its order and minimum gaps.

Live graphs: ``layout(graph, previous=old)`` keeps the nodes of ``old``: their layers only change
when an edge forces it (a new root goes above them), their left-to-right order in a layer is kept
(new nodes are slotted in where their neighbours are), their x is anchored to the old one, and the
result is translated so that old nodes stay where they were.

Shared nodes: ``layout(graph, shareable=nodes)`` may draw a node used in many places far apart
(an unrolled RNN's weights, tied embeddings: their AccumulateGrad nodes) by small per-use stand-ins,
as TensorBoard's graph visualiser extracts high-degree nodes (Wongsuphasawat et al., IEEE VIS 2017)
and Netron draws weights inside the node that reads them. After a longest-path layering, a
shareable node whose neighbours span more than ``_STANDIN_SPAN`` layers keeps one real edge (its
anchor) and every other edge (u, v) is replaced by a short edge from u to a stand-in of v in the
layer next to u's (:func:`_pick_standins`). Stand-ins have one edge each: they take part in the
ordering and x balancing as ordinary small nodes, and the long edges (and their bend points) that
made such graphs slow and unreadable are gone. Other nodes are laid out exactly as without it.

Effort on long edges: at most ``_DUMMY_WORK`` bend points enter the ordering and x balancing; past
that (a sharing graph laid out without stand-ins has millions) the longest edges are drawn
straight between their ends (a two-point polyline in ``Layout.edges``) and only counted, exactly,
in ``Layout.crossings``. Seconds instead of minutes; the app passes ``shareable`` instead.

``count_crossings(graph, layers, xs)`` counts the crossings of any layered drawing (ours, or a
Graphviz one) with the same counter.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

DEFAULT_NODE_SIZE = (140.0, 28.0)
DEFAULT_STANDIN_SIZE = (46.0, 20.0)  # a third of a node's width: a stand-in is a small tag
# Effort budgets, in "proper-graph nodes x iterations": small graphs get many iterations, the
# biggest still finish in a fraction of a second (Graphviz's mclimit/nslimit play the same role).
_ORDER_WORK = 200_000   # sweep + transpose iterations of the crossing reduction (4..24)
_X_WORK = 1_600_000     # balancing iterations of the x coordinates (40..400)
# Bend points (proper-graph nodes) that ordering and x may spend their effort on: past it the
# longest edges are drawn straight instead (see _straight_edges). A graph whose nodes are used
# far apart (an unrolled RNN's weights, without stand-ins) otherwise has millions.
_DUMMY_WORK = 60_000
_IRLS_START = 10        # plain least squares first, then reweighted towards vertical segments
_IRLS_EPS = 0.5         # px: a segment this close to vertical weighs as much as it ever will


@dataclass
class Layout:
    """The result of :func:`layout`.

    ``positions``: node -> (x, y) of its centre; y grows with the layer (sources at the top).
    ``layers``: node -> layer index (0 = top). ``order``: the nodes of each layer, left to right.
    ``edges``: (u, v) -> polyline [(x, y), ...] from u's centre to v's centre through the bend
    points of a long edge (one per layer crossed; none for an edge drawn straight past the effort
    budget, ``stats["straight"]`` of them, see the module docstring). ``crossings``: edge
    crossings of the layered drawing, bend points included (a straight edge passes each layer on
    the straight line, as :func:`count_crossings` assumes). ``reversed_edges``: edges laid out
    against their direction to break cycles (empty for a DAG). ``sizes``: node -> (w, h) used.
    ``stats``: phase timings (s) and counts, for benchmarks.

    Stand-ins (see ``shareable`` in :func:`layout`): ``standins``: key (v, u) -> (x, y), the centre
    of the stand-in box of node v drawn next to its neighbour u (a box of ``standin_size``, in
    layer ``standin_layers[(v, u)]``, one layer above or below u's). ``standin_of``: edge (u, v)
    or (v, u) of the graph -> the key (v, u) of the stand-in it is drawn to. Such an edge keeps its
    key in ``edges``, but its polyline ends (or starts) at the stand-in's centre instead of v's:
    code that draws ``edges[(u, v)]`` draws it to the stand-in. Every edge of v that is not in
    ``standin_of`` (its anchor, and the edges to neighbours private to v) is drawn to v itself.
    ``order`` lists the graph's nodes only; ``crossings`` counts the picture drawn: stand-in edges,
    not the long edges they replace.
    """
    positions: dict
    layers: dict
    order: list
    edges: dict
    crossings: int
    reversed_edges: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict, repr=False)
    stats: dict = field(default_factory=dict, repr=False)
    standins: dict = field(default_factory=dict, repr=False)
    standin_of: dict = field(default_factory=dict, repr=False)
    standin_layers: dict = field(default_factory=dict, repr=False)
    standin_size: tuple = DEFAULT_STANDIN_SIZE

    @property
    def bounds(self):
        """(xmin, ymin, xmax, ymax) of the node boxes, stand-ins included."""
        if not self.positions:
            return (0.0, 0.0, 0.0, 0.0)
        boxes = [(x, y, *self.sizes[v]) for v, (x, y) in self.positions.items()]
        boxes += [(x, y, *self.standin_size) for x, y in self.standins.values()]
        x0 = min(x - w / 2 for x, _, w, _ in boxes)
        x1 = max(x + w / 2 for x, _, w, _ in boxes)
        y0 = min(y - h / 2 for _, y, _, h in boxes)
        y1 = max(y + h / 2 for _, y, _, h in boxes)
        return (x0, y0, x1, y1)


# --------------------------------------------------------------------------------------------
# counting crossings

_SMALL = 64  # groups up to this size: all pairs compared at once; bigger ones: merge sort


def _grouped_inversions(vals, gid, ngroups):
    """Per group of consecutive elements (``gid`` sorted), the number of pairs i < j with
    vals[i] > vals[j]. Groups are padded to a power of two (the padding sorts last, so it adds no
    inversion) and laid out largest first, so that each starts at a multiple of its size. Groups
    of one size up to _SMALL then form a 2-d array whose pairs are compared in one go; the few
    larger ones go through a bottom-up merge sort of log2(size) numpy rounds."""
    vals = np.asarray(vals, dtype=np.int64)
    gid = np.asarray(gid, dtype=np.int64)
    n = len(vals)
    per = np.zeros(ngroups, dtype=np.int64)
    if n < 2:
        return per
    sizes = np.bincount(gid, minlength=ngroups)
    cap = np.ones(ngroups, dtype=np.int64)
    multi = sizes > 1
    cap[multi] = 1 << np.ceil(np.log2(sizes[multi])).astype(np.int64)
    gorder = np.argsort(-cap, kind="stable")
    ocap = cap[gorder]
    offset = np.empty(ngroups, dtype=np.int64)
    offset[gorder] = np.concatenate(([0], np.cumsum(ocap)[:-1]))
    pad = int(vals.max()) + 1
    start = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    cur = np.full(int(cap.sum()), pad, dtype=np.int64)
    cur[offset[gid] + np.arange(n) - start[gid]] = vals
    # groups of each size class are consecutive in gorder
    bounds = np.flatnonzero(np.diff(ocap)) + 1
    for lo, hi in zip(np.concatenate(([0], bounds)), np.append(bounds, ngroups)):
        c = int(ocap[lo])
        if c < 2:
            break
        groups = gorder[lo:hi]
        first = int(offset[groups[0]])
        block = cur[first:first + c * (hi - lo)]
        if c <= _SMALL:
            i, j = np.triu_indices(c, 1)
            m = block.reshape(-1, c)
            per[groups] = np.count_nonzero(m[:, i] > m[:, j], axis=1)
        else:
            per[groups] = _merge_inversions(block.reshape(-1, c))
    return per


def _merge_inversions(m):
    """Inversions in each row of m (rows of a power-of-two length), by a bottom-up merge sort
    done for all rows at once."""
    rows, c = m.shape
    big = np.int64(int(m.max()) + 1)
    cur = m.ravel().copy()
    idx = np.arange(len(cur), dtype=np.int64)
    row = idx // c
    counts = np.zeros(rows, dtype=np.int64)
    width = 1
    while width < c:
        pair = idx // (2 * width)
        in_b = (idx & width) != 0
        key = cur + pair * big
        ka, kb, pb = key[~in_b], key[in_b], pair[in_b]
        # each A half is sorted and the pairs are offset: one searchsorted over all of them
        greater = np.searchsorted(ka, (pb + 1) * big) - np.searchsorted(ka, kb, side="right")
        counts += np.bincount(row[in_b], weights=greater, minlength=rows).astype(np.int64)
        cur = np.sort(key, kind="stable") - pair * big  # runs of sorted halves: timsort merges them
        width *= 2
    return counts


def _segment_crossings(gap, upper, lower, ngaps=None):
    """Crossings among segments between consecutive layers, per gap: segment s joins position
    upper[s] in layer gap[s] to position lower[s] in layer gap[s] + 1. Two segments of a gap
    cross when their ends are in opposite orders (sharing an end is no crossing): sorted by
    upper end (then lower), the crossings are the inversions of the lower ends."""
    gap = np.asarray(gap, dtype=np.int64)
    if ngaps is None:
        ngaps = int(gap.max()) + 1 if len(gap) else 0
    if len(gap) < 2:
        return np.zeros(ngaps, dtype=np.int64)
    upper = np.asarray(upper, dtype=np.int64)
    lower = np.asarray(lower, dtype=np.int64)
    m = np.int64(max(int(upper.max()), int(lower.max())) + 1)
    key = np.sort((gap * m + upper) * m + lower)
    return _grouped_inversions(key % m, key // (m * m), ngaps)


def count_crossings(graph, layers, xs, edge_xs=None):
    """Edge crossings of a layered drawing of ``graph``: ``layers`` maps node -> layer (int),
    ``xs`` node -> x (a coordinate or a position in the layer; ties are broken by node order).
    An edge spanning k > 1 layers passes the k - 1 layers between at the x values
    ``edge_xs[(u, v)]`` if given, else on the straight line between its ends. Edges within one
    layer are ignored, an edge going up counts as if it went down. This is how
    :func:`layout`'s ``crossings`` are counted, and how a Graphviz drawing is compared to ours."""
    nodes = list(graph.nodes)
    pts_layer, pts_x, segs = [], [], []
    index = {}
    for i, v in enumerate(nodes):
        index[v] = i
        pts_layer.append(int(layers[v]))
        pts_x.append(float(xs[v]))
    for u, v in graph.edges:
        lu, lv = int(layers[u]), int(layers[v])
        if lu == lv:
            continue
        chain_x = None
        if edge_xs is not None and (u, v) in edge_xs:
            chain_x = list(edge_xs[(u, v)])
        a, b = index[u], index[v]
        if lu > lv:
            a, b, lu, lv = b, a, lv, lu
            if chain_x is not None:
                chain_x = chain_x[::-1]
        span = lv - lu
        if chain_x is None or len(chain_x) != span - 1:
            x0, x1 = pts_x[a], pts_x[b]
            chain_x = [x0 + (x1 - x0) * k / span for k in range(1, span)]
        prev = a
        for k in range(1, span):
            pts_layer.append(lu + k)
            pts_x.append(chain_x[k - 1])
            segs.append((prev, len(pts_x) - 1))
            prev = len(pts_x) - 1
        segs.append((prev, b))
    if len(segs) < 2:
        return 0
    pl = np.asarray(pts_layer, dtype=np.int64)
    px = np.asarray(pts_x, dtype=float)
    rank = np.empty(len(px), dtype=np.int64)
    rank[np.lexsort((np.arange(len(px)), px, pl))] = np.arange(len(px))
    sg = np.asarray(segs, dtype=np.int64)
    return int(_segment_crossings(pl[sg[:, 0]], rank[sg[:, 0]], rank[sg[:, 1]]).sum())


# --------------------------------------------------------------------------------------------
# phases 1 and 2: acyclic orientation, layering


def _topological_order(n, succ, indeg):
    """Kahn's algorithm; when every remaining node has a predecessor left (a cycle), the first
    unplaced node (in graph order) is taken anyway. Returns the order (all n nodes)."""
    indeg = list(indeg)
    placed = [False] * n
    order = []
    stack = [v for v in range(n - 1, -1, -1) if indeg[v] == 0]
    next_forced = 0
    while len(order) < n:
        if not stack:
            while placed[next_forced]:
                next_forced += 1
            stack.append(next_forced)
        v = stack.pop()
        if placed[v]:
            continue
        placed[v] = True
        order.append(v)
        for w in reversed(succ[v]):
            indeg[w] -= 1
            if indeg[w] == 0 and not placed[w]:
                stack.append(w)
    return order


def _assign_layers(n, pred, succ, topo, lower_bound=None, rounds=4, limit=24):
    """Longest-path layering from the sources, then block moves that shorten the edges (a cheap
    stand-in for Graphviz's network simplex, which is too slow in Python). Moving node v down one
    layer drags along every node that an edge keeps exactly one layer below a dragged node (its
    "tight" successors, transitively); the block S moves if that shortens the edges in total, i.e.
    if its nodes have more edges leaving S than entering it, and then by as many layers as the
    first edge out of S allows. Same upwards. Without this a parameter's ``leaf ->
    AccumulateGrad`` chain would sit in layer 0 with an edge hundreds of layers long to the op
    that uses it. Blocks are capped at ``limit`` nodes (bigger ones rarely pay and cost time) and
    led by a node whose own edges get shorter.
    ``lower_bound`` (an old layout's layers, None for new nodes) keeps old nodes in their layers
    unless an edge forces them down; only new nodes make block moves."""
    layer = [0] * n
    movable = None if lower_bound is None else [lb is None for lb in lower_bound]
    if lower_bound is None:
        for v in topo:
            p = pred[v]
            layer[v] = max([layer[u] for u in p]) + 1 if p else 0
    else:
        # Old nodes start in their old layers, new ones just above their successors (so a new
        # root goes above the old graph instead of pushing all of it down); then the edges push
        # nodes down where they must.
        start = [None] * n
        for v in reversed(topo):
            if lower_bound[v] is not None:
                start[v] = lower_bound[v]
            else:
                below = [start[w] for w in succ[v] if start[w] is not None]
                start[v] = min(below) - 1 if below else None
        for v in topo:
            p = pred[v]
            lo = max([layer[u] for u in p]) + 1 if p else None
            s = start[v]
            layer[v] = (0 if s is None else s) if lo is None else (lo if s is None else max(s, lo))
    # cost of moving a node one layer down: its in-edges get longer, its out-edges shorter
    gain = [len(pred[v]) - len(succ[v]) for v in range(n)]
    for _ in range(rounds):
        moved = False
        for step, ahead, sequence in ((1, succ, topo[::-1]), (-1, pred, topo)):
            for v in sequence:
                # Only blocks led by a node that gains itself (a cheap filter: most nodes of an
                # autograd graph have one edge in and one out and lead nowhere).
                if gain[v] * step >= 0 or (movable is not None and not movable[v]):
                    continue
                while True:
                    block, seen = [v], {v}
                    d = gain[v] * step
                    i = 0
                    while i < len(block) and len(block) <= limit:
                        u = block[i]
                        i += 1
                        nxt = layer[u] + step
                        for w in ahead[u]:
                            if layer[w] == nxt and w not in seen:
                                seen.add(w)
                                block.append(w)
                                d += gain[w] * step
                    if d >= 0 or len(block) > limit:
                        break
                    if movable is not None and not all([movable[u] for u in block]):
                        break
                    # d < 0 implies an edge leaving the block ahead; it limits the move
                    room = min([(layer[w] - layer[u]) * step for u in block for w in ahead[u]
                                if w not in seen]) - 1
                    for u in block:
                        layer[u] += step * room
                    moved = True
        if not moved:
            break
    return layer


# --------------------------------------------------------------------------------------------
# the layered graph with dummy nodes


class _Proper:
    """The layered graph with every long edge split into unit segments through dummy nodes.
    Nodes 0..n-1 are the graph's nodes, n.. the dummies. ``chains[e]`` lists the nodes along
    (oriented) edge e, top to bottom."""

    def __init__(self, n, layer, ea, eb, straight=None):
        layer = np.asarray(layer, dtype=np.int64)
        ea = np.asarray(ea, dtype=np.int64)
        eb = np.asarray(eb, dtype=np.int64)
        ne = len(ea)
        span = layer[eb] - layer[ea] if ne else np.zeros(0, dtype=np.int64)
        if straight is not None:
            # a straight edge: no bend point, no segment (drawn straight once x is known)
            span = np.where(straight, 1, span)
        ndum = span - 1
        total_dummies = int(ndum.sum()) if ne else 0
        self.n = n
        self.size = n + total_dummies
        dfirst = n + np.concatenate(([0], np.cumsum(ndum)[:-1])) if ne else np.zeros(0, np.int64)
        clen = span + 1
        cstart = np.concatenate(([0], np.cumsum(clen)[:-1])) if ne else np.zeros(0, np.int64)
        eid = np.repeat(np.arange(ne), clen)
        k = np.arange(int(clen.sum()) if ne else 0) - np.repeat(cstart, clen)
        kspan = span[eid]
        chain = np.where(k == 0, ea[eid], np.where(k == kspan, eb[eid], dfirst[eid] + k - 1))
        inner = (k > 0) & (k < kspan)
        self.layer = np.empty(self.size, dtype=np.int64)
        self.layer[:n] = layer
        self.layer[chain[inner]] = layer[ea[eid[inner]]] + k[inner]
        self.nlayers = int(self.layer.max()) + 1 if self.size else 0
        segment = k != kspan
        if straight is not None:
            segment &= ~np.asarray(straight, dtype=bool)[eid]
        self.seg_a = chain[segment]                         # upper end of each unit segment
        self.seg_b = chain[np.flatnonzero(segment) + 1]     # lower end
        self.chain = chain
        self.cstart = cstart
        self.clen = clen
        self.dummy_edge = np.full(self.size, -1, dtype=np.int64)  # for dummies: their edge
        self.dummy_edge[chain[inner]] = eid[inner]
        self.dummy_k = np.zeros(self.size, dtype=np.int64)         # and their index along it
        self.dummy_k[chain[inner]] = k[inner]
        up = [[] for _ in range(self.size)]
        down = [[] for _ in range(self.size)]
        for a, b in zip(self.seg_a.tolist(), self.seg_b.tolist()):
            down[a].append(b)
            up[b].append(a)
        self.up = up
        self.down = down


# --------------------------------------------------------------------------------------------
# phase 3: crossing reduction


def _initial_order(p, starts, prefer=None):
    """Left-to-right order of each layer from a depth-first walk of the layered graph, edges
    taken both ways, appending each node to its layer when first reached: every subtree of the
    walk is contiguous in every layer, so a tree gets no crossing. ``prefer`` (a key per node,
    e.g. the previous x) instead sorts each layer by it."""
    layers = [[] for _ in range(p.nlayers)]
    lay = p.layer.tolist()
    if prefer is not None:
        for v in sorted(range(p.size), key=prefer.__getitem__):
            layers[lay[v]].append(v)
        return layers
    seen = bytearray(p.size)
    up, down = p.up, p.down
    for s in list(starts) + list(range(p.size)):
        if seen[s]:
            continue
        stack = [s]
        while stack:
            v = stack.pop()
            if seen[v]:
                continue
            seen[v] = 1
            layers[lay[v]].append(v)
            # Neighbours above are walked first, each list in its order (an op's arguments in
            # argument order); pushed in reverse because the stack pops the last one first.
            for w in reversed(down[v]):
                if not seen[w]:
                    stack.append(w)
            for w in reversed(up[v]):
                if not seen[w]:
                    stack.append(w)
    return layers


class _Orderer:
    """Barycenter sweeps and transpositions over the per-layer lists of node ids (kept in place),
    restricted to the layers around gaps that still have crossings. Keeps the crossings of each
    gap between layers, recounting only the gaps next to layers that changed."""

    def __init__(self, p, layers, keep=None):
        self.p = p
        self.layers = layers
        self.pos = [0] * p.size
        for lst in layers:
            for i, v in enumerate(lst):
                self.pos[v] = i
        # keep[v]: a rank that the sweeps must respect among the kept nodes of a layer (stability)
        self.keep = keep
        self.ngaps = max(p.nlayers - 1, 0)
        gap = p.layer[p.seg_a]
        by_gap = np.argsort(gap, kind="stable")
        self.seg_a, self.seg_b, self.seg_gap = p.seg_a[by_gap], p.seg_b[by_gap], gap[by_gap]
        self.gap_start = np.searchsorted(self.seg_gap, np.arange(self.ngaps + 1))
        self.dirty = set()
        self.per_gap = np.zeros(self.ngaps, dtype=np.int64)
        self.total = self._recount(None)

    def _recount(self, gaps):
        """Recount the crossings of ``gaps`` (all if None); returns the new total."""
        if gaps is None:
            sel = slice(None)
        else:
            gaps = np.asarray(sorted(gaps), dtype=np.int64)
            lo, hi = self.gap_start[gaps], self.gap_start[gaps + 1]
            n = hi - lo
            # indices of the segments of those gaps (consecutive runs of the sorted segments)
            sel = np.repeat(lo - np.concatenate(([0], np.cumsum(n)[:-1])), n) + np.arange(n.sum())
        pos = np.asarray(self.pos, dtype=np.int64)
        per = _segment_crossings(self.seg_gap[sel], pos[self.seg_a[sel]], pos[self.seg_b[sel]],
                                 self.ngaps)
        if gaps is None:
            self.per_gap = per
        else:
            self.per_gap[gaps] = per[gaps]
        return int(self.per_gap.sum())

    def crossings(self):
        """Crossings now (recounting the gaps around the layers changed since the last call)."""
        if self.dirty:
            gaps = {g for li in self.dirty for g in (li - 1, li) if 0 <= g < self.ngaps}
            self.dirty = set()
            self.total = self._recount(gaps)
        return self.total

    def _reorder(self, li, nbrs, reverse):
        """Sort layer li by the barycenter of each node's neighbours in the adjacent layer (nodes
        without such neighbours keep their slot); ties keep their order, or with ``reverse``
        swap it (as Graphviz does on alternate passes, to get off plateaus). True if the order
        changed."""
        lst = self.layers[li]
        pos = self.pos
        movable, slots = [], []
        for i, v in enumerate(lst):
            ns = nbrs[v]
            if ns:
                b = pos[ns[0]] if len(ns) == 1 else sum([pos[u] for u in ns]) / len(ns)
                movable.append((b, -i if reverse else i, v))
                slots.append(i)
        if len(movable) < 2:
            return False
        movable.sort()
        new = list(lst)
        for slot, (_, _, v) in zip(slots, movable):
            new[slot] = v
        keep = self.keep
        if keep is not None:
            # Old nodes keep their previous relative order: they take the slots the sort gave to
            # old nodes, in their old order; new nodes stay where the barycenter put them.
            kslots = [i for i, v in enumerate(new) if keep[v] is not None]
            kept = sorted((new[i] for i in kslots), key=keep.__getitem__)
            for i, v in zip(kslots, kept):
                new[i] = v
        if new == lst:
            return False
        lst[:] = new
        for i, v in enumerate(new):
            pos[v] = i
        self.dirty.add(li)
        return True

    def sweep(self, down, active, reverse=False):
        """One sweep down (each layer by the one above) or up; a layer is reordered if it is
        active (next to a gap with crossings) or its neighbour layer just changed."""
        nbrs = self.p.up if down else self.p.down
        rng = range(1, len(self.layers)) if down else range(len(self.layers) - 2, -1, -1)
        prev_changed = False
        for li in rng:
            if len(self.layers[li]) < 2 or not (active[li] or prev_changed):
                prev_changed = False
                continue
            prev_changed = self._reorder(li, nbrs, reverse)

    def transpose(self, active, reverse=False):
        """Swap neighbours in the active layers while that removes crossings (Gansner et al.);
        with ``reverse`` also when it changes nothing (a sideways move)."""
        keep = self.keep
        pos = self.pos
        up, down = self.p.up, self.p.down
        for li, lst in enumerate(self.layers):
            if not active[li] or len(lst) < 2:
                continue
            # positions of each node's neighbours above and below (those layers hold still)
            nu = [[pos[a] for a in up[v]] for v in lst]
            nd = [[pos[a] for a in down[v]] for v in lst]
            for _ in range(4):
                improved = False
                for i in range(len(lst) - 1):
                    # c0: crossings between the edges of lst[i] and lst[i + 1] as they are,
                    # c1: after swapping them
                    c0 = c1 = 0
                    for na, nb in ((nu[i], nu[i + 1]), (nd[i], nd[i + 1])):
                        if len(na) == 1 and len(nb) == 1:
                            if na[0] > nb[0]:
                                c0 += 1
                            elif na[0] < nb[0]:
                                c1 += 1
                        else:
                            for a in na:
                                for b in nb:
                                    if a > b:
                                        c0 += 1
                                    elif a < b:
                                        c1 += 1
                    if c0 == 0 or c1 > c0 or (c1 == c0 and not reverse):
                        continue
                    u, v = lst[i], lst[i + 1]
                    if keep is not None and keep[u] is not None and keep[v] is not None:
                        continue
                    lst[i], lst[i + 1] = v, u
                    nu[i], nu[i + 1] = nu[i + 1], nu[i]
                    nd[i], nd[i + 1] = nd[i + 1], nd[i]
                    pos[u], pos[v] = i + 1, i
                    self.dirty.add(li)
                    improved = improved or c1 < c0
                if not improved:
                    break

    def snapshot(self):
        self.crossings()
        return [list(lst) for lst in self.layers], self.per_gap.copy(), self.total

    def restore(self, snap):
        layers, self.per_gap, self.total = snap
        self.layers = [list(lst) for lst in layers]
        for lst in self.layers:
            for i, v in enumerate(lst):
                self.pos[v] = i
        self.dirty = set()


def _reduce_crossings(orderer, max_iter=24, patience=4, history=None):
    """Alternate down/up sweeps + transpose on the layers around crossings; keep the best order
    seen; stop when the count is 0 or has not improved for ``patience`` iterations. ``history``
    (a list) receives the count before and after each iteration."""
    best = orderer.crossings()
    best_snap = orderer.snapshot()
    if history is not None:
        history.append(best)
    stale = 0
    for it in range(max_iter):
        if best == 0:
            break
        nl = len(orderer.layers)
        active = np.zeros(nl, dtype=bool)
        hot = np.flatnonzero(orderer.per_gap)
        active[hot] = True
        active[hot + 1] = True
        active = active.tolist()
        reverse = it % 4 < 2
        orderer.sweep(it % 2 == 0, active, reverse)
        orderer.transpose(active, not reverse)
        count = orderer.crossings()
        if history is not None:
            history.append(count)
        # An equal count is kept too (a sideways move), but only a better one resets patience.
        stale = 0 if count < best else stale + 1
        if count <= best:
            best, best_snap = count, orderer.snapshot()
        if stale >= patience:
            break
    orderer.restore(best_snap)
    return best


# --------------------------------------------------------------------------------------------
# phase 4: coordinates


def _project(d, cum, lid, weight=None, rounds=6):
    """x closest to the wishes ``d`` (nodes sorted by layer, then order) that keeps every layer's
    order and minimum gaps (``cum``: the minimum offset of each node from the first of its layer).
    With y = d - cum the constraint is "y non-decreasing within a layer": an isotonic regression,
    solved by pool-adjacent-violators done for all layers at once: each round replaces every
    maximal non-increasing run by its weighted mean, until no run is left (usually 2-3 rounds).
    Should ``rounds`` not suffice, the mean of the running max from the left and the running min
    from the right finishes the job (feasible, if not quite closest)."""
    y = d - cum
    n = len(y)
    if n < 2:
        return d.copy()
    w = np.ones(n) if weight is None else weight
    boundary = lid[1:] != lid[:-1]
    for _ in range(rounds):
        if not ((y[:-1] > y[1:]) & ~boundary).any():
            return y + cum
        # pool runs of ties too: members of a pooled block share one value and stay together
        pool = (y[:-1] >= y[1:]) & ~boundary
        new_block = np.ones(n, dtype=bool)
        new_block[1:] = ~pool
        block = np.cumsum(new_block) - 1
        y = (np.bincount(block, w * y) / np.bincount(block, w))[block]
    big = float(y.max() - y.min()) + 1.0
    z = y + lid * big
    fwd = np.maximum.accumulate(z)
    bwd = np.minimum.accumulate(z[::-1])[::-1]
    return (fwd + bwd) / 2 - lid * big + cum


def _x_coordinates(p, layers, widths, node_gap, iterations, anchor=None, init=None):
    """x of every node of the layered graph (indexed by node id), for the order ``layers``.

    Minimises, roughly, the weighted horizontal length of all segments subject to "no overlap,
    order kept" by alternating two vectorised steps: every node moves to the weighted mean x of
    its neighbours (Jacobi), then every layer is projected back onto its constraints
    (``_project``, weighted by how strongly each node is held). ``anchor`` (old x or NaN) adds a
    pull towards the old position; ``init`` is the starting x (default: each layer centred)."""
    order = np.fromiter((v for lst in layers for v in lst), dtype=np.int64, count=p.size)
    lid = p.layer[order].astype(float)
    w = widths[order]
    real = order < p.n
    # minimum distance between consecutive nodes of a layer: half widths + a gap (smaller next
    # to the bend points of long edges, so that bundles of long edges stay tight)
    gap = np.where(real[1:] & real[:-1], node_gap, node_gap / 2.0)
    sep = np.maximum((w[1:] + w[:-1]) / 2 + gap, 1e-3)  # strictly increasing x keeps the order
    first = np.ones(len(order), dtype=bool)
    first[1:] = lid[1:] != lid[:-1]
    sep = np.concatenate(([0.0], sep))
    sep[first] = 0.0
    cum = np.cumsum(sep)
    starts = np.flatnonzero(first)
    cum -= np.repeat(cum[starts], np.diff(np.append(starts, len(order))))
    # slot of each node id in the sorted arrays
    slot = np.empty(p.size, dtype=np.int64)
    slot[order] = np.arange(len(order))
    sa, sb = slot[p.seg_a], slot[p.seg_b]
    dummy_a, dummy_b = ~real[sa], ~real[sb]
    # Straight long edges matter most (a kinked edge is hard to follow over many layers).
    sw = np.where(dummy_a & dummy_b, 8.0, np.where(dummy_a | dummy_b, 2.0, 1.0))
    nn = len(order)
    if anchor is not None:
        aw = (~np.isnan(anchor[order])).astype(float)
        ax = np.nan_to_num(anchor[order])
    if init is not None:
        x = _project(init[order], cum, lid)
    else:
        # every layer packed and centred on 0
        ends = np.append(starts[1:] - 1, nn - 1)
        centre = np.repeat(cum[ends] / 2, np.diff(np.append(starts, nn)))
        x = cum - centre
    for it in range(iterations):
        # Iteratively reweighted: a segment's weight grows as it gets closer to vertical, which
        # turns "least squares" into roughly "least total slant" and lets most edges come out
        # exactly vertical instead of all slightly slanted.
        ew = sw / (np.abs(x[sa] - x[sb]) + _IRLS_EPS) if it >= _IRLS_START else sw
        num = np.bincount(sa, ew * x[sb], nn) + np.bincount(sb, ew * x[sa], nn)
        den = np.bincount(sa, ew, nn) + np.bincount(sb, ew, nn)
        if anchor is not None:
            # an old node is held at its old x as strongly as all its edges together pull it
            num = num + aw * den * ax
            den = den + aw * den
        has = den > 0
        d = np.where(has, num / np.where(has, den, 1.0), x)
        prev, x = x, _project(d, cum, lid, den + 1e-9)
        if it > _IRLS_START and np.abs(x - prev).max() < 0.01:
            break  # settled (to a hundredth of a pixel)
    out = np.empty(p.size)
    out[order] = x
    return out


# --------------------------------------------------------------------------------------------
# the entry point


def layout(graph, node_size=None, *, layer_gap=40.0, node_gap=20.0, previous=None,
           iterations=None, sweeps=None, shareable=None, standin_size=None):
    """Lay out ``graph`` (a networkx DiGraph) in layers; see the module docstring.

    ``node_size(node) -> (width, height)``, default :data:`DEFAULT_NODE_SIZE`. ``layer_gap``: the
    vertical space between layers; ``node_gap``: the horizontal space between neighbouring boxes
    (half of it next to a long edge's bend point). ``previous``: an earlier :class:`Layout` of
    (most of) ``graph``, e.g. before the forward pass added nodes: its nodes keep their layers,
    order and, nearly, positions. ``sweeps`` / ``iterations``: effort of the crossing reduction
    and of the x balancing (default: by graph size). Cycles are broken by reversing edges
    (``Layout.reversed_edges``); self-loops are not drawn.

    ``shareable``: nodes that may be drawn by stand-ins (gradviz passes the AccumulateGrad nodes;
    the layout itself knows nothing of autograd). One whose neighbours lie far apart in the graph
    (see :func:`_pick_standins`) keeps one real edge, its anchor, and every other edge (u, v) is
    drawn to a small stand-in box of v (``standin_size`` (w, h), default
    :data:`DEFAULT_STANDIN_SIZE`) one layer away from u; see :class:`Layout`.
    """
    stats = {}
    clock = [time.perf_counter()]

    def lap(phase):
        now = time.perf_counter()
        stats[phase] = now - clock[0]
        clock[0] = now

    nodes = list(graph.nodes)
    n_real = len(nodes)
    sizes = {v: tuple(map(float, node_size(v))) if node_size is not None else DEFAULT_NODE_SIZE
             for v in nodes}
    standin_size = DEFAULT_STANDIN_SIZE if standin_size is None else tuple(map(float, standin_size))
    if n_real == 0:
        return Layout({}, {}, [], {}, 0, [], sizes, stats, standin_size=standin_size)
    edge_list = [(u, v) for u, nbrs in graph.adj.items() for v in nbrs if u != v]
    standin_of = {}
    if shareable is not None:
        standin_of = _pick_standins(nodes, edge_list, shareable, previous)
    lap("sharing")
    # The graph laid out: the graph's nodes, then one stand-in node per key; a replaced edge
    # (u, v) becomes (u, stand-in) or (stand-in, u), in the direction of the original.
    keys = list(dict.fromkeys(standin_of.values()))
    standin_node = {k: _StandIn(k) for k in keys}
    nodes = nodes + [standin_node[k] for k in keys]
    n = len(nodes)
    drawn_edges = edge_list
    if standin_of:
        drawn_edges = []
        for u, v in edge_list:
            k = standin_of.get((u, v))
            if k is None:
                drawn_edges.append((u, v))
            elif k[0] == v:
                drawn_edges.append((u, standin_node[k]))
            else:
                drawn_edges.append((standin_node[k], v))
    xsizes = [sizes[v] for v in nodes[:n_real]] + [standin_size] * len(keys)
    _, ea, eb, rev, pred, succ, topo = _orient(nodes, drawn_edges)

    old_layer = None
    if previous is not None:
        old_layers = dict(previous.layers)
        old_layers.update((standin_node[k], lay) for k, lay in previous.standin_layers.items()
                          if k in standin_node)
        old_layer = [old_layers.get(v) for v in nodes]
    layer = _assign_layers(n, pred, succ, topo, old_layer)
    # a stand-in sits right next to the one node it is joined to (it has no other constraint)
    for t in range(n_real, n):
        layer[t] = layer[pred[t][0]] + 1 if pred[t] else layer[succ[t][0]] - 1
    top = min(layer)
    layer = [li - top for li in layer]
    lap("layering")

    straight = _straight_edges(layer, ea, eb, _DUMMY_WORK)
    p = _Proper(n, layer, ea, eb, straight)
    lap("proper_graph")

    keep = anchor = None
    if previous is None:
        # walk from the root: the sources (edges along the gradient: the loss) or the sinks
        # (torchviz's direction), whichever are fewer
        sources = [v for v in topo if not pred[v]]
        sinks = [v for v in topo if not succ[v]]
        layers_list = _initial_order(p, sources if len(sources) <= len(sinks) else sinks)
    else:
        old_pos = dict(previous.positions)
        old_pos.update((standin_node[k], xy) for k, xy in previous.standins.items()
                       if k in standin_node)
        # old polylines by the edge key drawn (a stand-in edge keeps the original edge's key)
        old_edges = [previous.edges.get(uv) for uv in edge_list]
        anchor, key = _previous_hints(p, nodes, old_pos, old_edges, rev)
        layers_list = _initial_order(p, (), key.tolist())
        known = (~np.isnan(anchor)).tolist()
        keep = [k if old else None for k, old in zip(key.tolist(), known)]
    lap("initial_order")

    orderer = _Orderer(p, layers_list, keep)
    if sweeps is None:
        sweeps = int(min(24, max(4, _ORDER_WORK // p.size)))
    history = []
    crossings = _reduce_crossings(orderer, sweeps, min(4, max(2, sweeps // 4)), history)
    lap("crossing_reduction")

    if iterations is None:
        iterations = int(min(400, max(40, _X_WORK // p.size)))
    widths = np.zeros(p.size)  # a bend point takes no room, only a (halved) gap
    widths[:n] = [w for w, _ in xsizes]
    xs = _x_coordinates(p, orderer.layers, widths, node_gap, iterations, anchor,
                        None if previous is None else key)
    if straight is not None:
        # the ordering counted the segments it placed; the straight edges cross them and each other
        crossings = _count_with_straight(p, xs, straight)
    lap("x")
    heights = np.zeros(p.nlayers)
    np.maximum.at(heights, np.asarray(layer), [h for _, h in xsizes])
    layer_y = np.concatenate(([0.0], np.cumsum((heights[:-1] + heights[1:]) / 2 + layer_gap)))
    ys = layer_y[p.layer]
    if previous is not None:
        # shift everything so that the old nodes stay put (e.g. when a new root went on top)
        old = [i for i, v in enumerate(nodes[:n_real]) if v in previous.positions]
        if old:
            xs = xs + np.median([previous.positions[nodes[i]][0] - xs[i] for i in old])
            ys = ys + np.median([previous.positions[nodes[i]][1] - ys[i] for i in old])

    xl, yl = xs.tolist(), ys.tolist()
    chain, cs, cl = p.chain.tolist(), p.cstart.tolist(), p.clen.tolist()
    edges = {}
    for e, uv in enumerate(edge_list):
        pts = [(xl[c], yl[c]) for c in chain[cs[e]:cs[e] + cl[e]]]
        edges[uv] = pts[::-1] if rev[e] else pts
    result = Layout(
        positions={v: (xl[i], yl[i]) for i, v in enumerate(nodes[:n_real])},
        layers={v: layer[i] for i, v in enumerate(nodes[:n_real])},
        order=[[nodes[v] for v in lst if v < n_real] for lst in orderer.layers],
        edges=edges,
        crossings=int(crossings),
        reversed_edges=[uv for uv, r in zip(edge_list, rev) if r],
        sizes=sizes,
        stats=stats,
        standins={k: (xl[i], yl[i]) for i, k in enumerate(keys, n_real)},
        standin_of=standin_of,
        standin_layers={k: layer[i] for i, k in enumerate(keys, n_real)},
        standin_size=standin_size)
    lap("output")
    stats.update(layers=p.nlayers, dummies=p.size - n, crossing_history=history,
                 sweeps=sweeps, iterations=iterations, standins=len(keys),
                 shared=len({k[0] for k in keys}),
                 straight=0 if straight is None else int(straight.sum()))
    stats["total"] = sum(stats[k] for k in ("sharing", "layering", "proper_graph", "initial_order",
                                              "crossing_reduction", "x", "output"))
    return result


def _straight_edges(layer, ea, eb, budget):
    """None if the edges need at most ``budget`` bend points; else a bool mask of the longest
    edges, just enough of them that the rest need at most ``budget``: those are drawn straight
    between their ends, and take no part in the ordering and x balancing."""
    layer = np.asarray(layer, dtype=np.int64)
    dummies = np.abs(layer[np.asarray(eb, dtype=np.int64)] - layer[np.asarray(ea, dtype=np.int64)]) - 1
    if not len(dummies) or int(dummies.sum()) <= budget:
        return None
    by_span = np.argsort(-dummies, kind="stable")
    left = int(dummies.sum()) - np.cumsum(dummies[by_span])  # bend points left after each
    count = int(np.searchsorted(-left, -budget)) + 1
    straight = np.zeros(len(dummies), dtype=bool)
    straight[by_span[:count]] = True
    return straight


def _count_with_straight(p, xs, straight):
    """Crossings of the whole drawing, straight edges included, each passing the layers between
    its ends on the straight line: counted as :func:`count_crossings` counts it (the points of a
    layer ranked by x, ties by node order, then by edge order)."""
    se = np.flatnonzero(straight)
    a = p.chain[p.cstart[se]]      # upper end (edges are oriented downwards)
    b = p.chain[p.cstart[se] + 1]  # lower end
    span = p.layer[b] - p.layer[a]
    steps = span - 1               # interior points of each straight edge
    first = np.concatenate(([0], np.cumsum(steps)[:-1]))
    eid = np.repeat(np.arange(len(se)), steps)
    k = np.arange(int(steps.sum())) - first[eid] + 1
    x0, x1 = xs[a][eid], xs[b][eid]
    px = x0 + (x1 - x0) * k / span[eid]  # as count_crossings interpolates, from the upper end
    pl = p.layer[a][eid] + k
    allx = np.concatenate((xs[:p.size], px))
    alll = np.concatenate((p.layer, pl))
    # tie-breaks: nodes first (by index), then edge points by edge
    kind = np.concatenate((np.zeros(p.n, np.int64), np.ones(len(allx) - p.n, np.int64)))
    ekey = np.concatenate((np.arange(p.n), p.dummy_edge[p.n:], se[eid]))
    rank = np.empty(len(allx), dtype=np.int64)
    rank[np.lexsort((ekey, kind, allx, alll))] = np.arange(len(allx))
    # the straight edges' unit segments, from the upper end through the interior points
    sid = np.repeat(np.arange(len(se)), span)
    j = np.arange(int(span.sum())) - np.repeat(np.concatenate(([0], np.cumsum(span)[:-1])), span)
    pt = p.size + first[sid] + j  # the interior point j (1-based) of the edge, where it exists
    upper = np.where(j == 0, a[sid], pt - 1)
    lower = np.where(j == span[sid] - 1, b[sid], pt)
    sa = np.concatenate((p.seg_a, upper))
    sb = np.concatenate((p.seg_b, lower))
    return int(_segment_crossings(alll[sa], rank[sa], rank[sb]).sum())


class _StandIn:
    """The node that stands for stand-in ``key`` inside the layout (never equal to a graph node)."""
    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __repr__(self):
        return f"_StandIn{self.key!r}"


# A shareable node gets stand-ins when the layers of its neighbours (in a longest-path layering of
# the whole graph, which costs O(V + E)) span more than this many layers. Why: all its edges then
# stay within a few layers of each other anyway: at most a handful of bend points, which the
# crossing reduction handles well, and one box is easier to read than several stand-ins. Past it
# one edge at least is long, and a node used in k places far apart draws k - 1 long edges that
# cross everything between them (an unrolled RNN's weights: thousands of layers each) and
# dominate the crossing reduction's work; there stand-ins are both faster and far more legible.
_STANDIN_SPAN = 3


def _pick_standins(nodes, edge_list, shareable, previous=None):
    """Which edges are drawn to a stand-in: {edge (u, v): stand-in key (s, w)}, where s is the
    shareable node (u or v) and w the other end, the neighbour the stand-in stands next to.

    Only the "outer" neighbours of s count: those with an edge to some other node too (a leaf
    tensor hanging off its AccumulateGrad only is private to it and always stays with it). If there
    are two or more and their layers span more than ``_STANDIN_SPAN`` (see there), s keeps one
    real edge, to its anchor, and each other outer neighbour gets a stand-in (all edges between s
    and that neighbour go to it). The anchor is the outer neighbour whose layer is closest to s's
    own: along the gradient s sits below all its users and the closest is the deepest, the first
    use in the forward pass, after whose gradient the accumulation completes; in torchviz's
    direction s sits above them and the closest is again the first use. Ties go to the first
    edge (creation order). With ``previous``, a node keeps its old anchor while that edge exists
    and was drawn real (so that a node that becomes shared stays where it was)."""
    index = {v: i for i, v in enumerate(nodes)}
    share = {index[v] for v in shareable if v in index}
    if not share:
        return {}
    n = len(nodes)
    _, ea, eb, _, pred, succ, topo = _orient(nodes, edge_list)
    layer = [0] * n
    for v in topo:
        p = pred[v]
        layer[v] = max([layer[u] for u in p]) + 1 if p else 0
    degree = [len(pred[v]) + len(succ[v]) for v in range(n)]
    incident = {}
    for e, (u, v) in enumerate(edge_list):
        a, b = index[u], index[v]
        if a in share:
            incident.setdefault(a, []).append((e, b))
        if b in share:
            incident.setdefault(b, []).append((e, a))
    old_standin_of = getattr(previous, "standin_of", None) or {}
    old_edges = previous.edges if previous is not None else {}
    picked = []  # (s, anchor, outer neighbours with their edges)
    reserved = set()  # edges to anchors: drawn real whatever the other end is
    for s, inc in incident.items():
        # the outer neighbours, in first-edge order, with the edges joining them to s
        outer = {}
        for e, w in inc:
            if degree[w] > (w in pred[s]) + (w in succ[s]):
                outer.setdefault(w, []).append(e)
        if len(outer) < 2:
            continue
        lays = [layer[w] for w in outer]
        if max(lays) - min(lays) <= _STANDIN_SPAN:
            continue
        anchor = None
        if previous is not None:
            for w, es in outer.items():
                if any(edge_list[e] in old_edges and edge_list[e] not in old_standin_of for e in es):
                    anchor = w
                    break
        if anchor is None:
            anchor = min(outer, key=lambda w: abs(layer[w] - layer[s]))  # first of equals
        picked.append((s, anchor, outer))
        reserved.update(outer[anchor])
    out = {}
    for s, anchor, outer in picked:
        sv = nodes[s]
        for w, es in outer.items():
            if w == anchor:
                continue
            for e in es:
                # an edge between two shared nodes: real if it is either one's anchor, else one
                # stand-in (of the first of the two)
                if e not in reserved and edge_list[e] not in out:
                    out[edge_list[e]] = (sv, nodes[w])
    return out


def _orient(nodes, edge_list):
    """Edges as index arrays, each oriented along a topological order (reversed if it closes a
    cycle), plus adjacency lists (duplicates from u->v + v->u merged) and the order itself."""
    n = len(nodes)
    index = {v: i for i, v in enumerate(nodes)}
    eu = [index[u] for u, _ in edge_list]
    ev = [index[v] for _, v in edge_list]
    out = [[] for _ in range(n)]
    indeg = [0] * n
    for a, b in zip(eu, ev):
        out[a].append(b)
        indeg[b] += 1
    topo = _topological_order(n, out, indeg)
    rank = [0] * n
    for i, v in enumerate(topo):
        rank[v] = i
    rev = [rank[a] > rank[b] for a, b in zip(eu, ev)]
    ea = [b if r else a for a, b, r in zip(eu, ev, rev)]
    eb = [a if r else b for a, b, r in zip(eu, ev, rev)]
    pred = [[] for _ in range(n)]
    succ = [[] for _ in range(n)]
    for a, b in dict.fromkeys(zip(ea, eb)):
        succ[a].append(b)
        pred[b].append(a)
    return edge_list, ea, eb, rev, pred, succ, topo


def _previous_hints(p, nodes, old_pos, old_edges, rev):
    """From an old layout (``old_pos``: node -> old centre; ``old_edges``: per edge its old
    polyline or None): the old x of every node and bend point it had (NaN for new ones), and
    a sort key per node for the initial order: the old x, or for a new node the mean key of its
    neighbours (spread over a few steps; still unknown: to the right of everything)."""
    anchor = np.full(p.size, np.nan)
    for i, v in enumerate(nodes):
        xy = old_pos.get(v)
        if xy is not None:
            anchor[i] = xy[0]
    dummies = np.flatnonzero(p.dummy_edge >= 0)
    for d, e, k in zip(dummies.tolist(), p.dummy_edge[dummies].tolist(),
                       p.dummy_k[dummies].tolist()):
        old = old_edges[e]
        if old is not None and len(old) == p.clen[e]:  # same span: bend points match up
            anchor[d] = old[len(old) - 1 - k][0] if rev[e] else old[k][0]
    key = anchor.copy()
    a, b = p.seg_a, p.seg_b
    for _ in range(8):
        missing = np.isnan(key)
        if not missing.any():
            break
        known = (~missing).astype(float)
        val = np.where(missing, 0.0, key)
        total = (np.bincount(a, val[b] * known[b], p.size)
                 + np.bincount(b, val[a] * known[a], p.size))
        count = np.bincount(a, known[b], p.size) + np.bincount(b, known[a], p.size)
        fill = missing & (count > 0)
        key[fill] = total[fill] / count[fill]
    missing = np.isnan(key)
    if missing.any():
        right = np.nanmax(key) if not missing.all() else 0.0
        key[missing] = right + 1.0 + np.arange(int(missing.sum()))
    return anchor, key
