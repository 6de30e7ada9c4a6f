"""Layered (Sugiyama-style) layout of autograd graphs, computed in the core (no Qt).

``layout(graph)`` places the nodes of a networkx DiGraph in horizontal layers, edges pointing down:
the sources (for a graph whose edges follow the gradient, the loss's ``grad_fn``) at the top, every
edge going from a layer to a lower one. The four classic phases, each chosen to be fast in Python
on graphs of a few thousand nodes (a transformer's autograd graph is ~5,000 nodes and ~2,800
layers deep, so anything done per layer in Python must be cheap, and anything done per edge pair
must be numpy):

1. **Cycles.** Autograd graphs are DAGs, but a graph read from elsewhere may not be. A Kahn
   topological sort that, when it gets stuck, takes the first unplaced node as if it were a
   source; every edge that then points backwards is drawn reversed (``Layout.reversed_edges``),
   self-loops are dropped. So a cycle costs O(V + E), never a hang.
2. **Layering.** Longest path from the sources, then a few greedy passes that move each node to
   the end of its feasible range that shortens its edges (a cheap stand-in for Graphviz's network
   simplex): without them a parameter's ``leaf -> AccumulateGrad`` chain sits in layer 0 and its
   edge to the op that uses it, hundreds of layers down, becomes hundreds of dummy nodes.
   Edges spanning several layers are split by dummy nodes (one per crossed layer).
3. **Crossing reduction.** An initial order from a depth-first walk of the (undirected) layered
   graph, which is crossing-free for trees and nearly so for autograd graphs (a tree plus a few
   residual/shared edges); then alternating down/up barycenter sweeps and adjacent transpositions,
   only on the layers next to a gap that still has crossings. Crossings are counted for all gaps
   at once by a numpy merge-sort inversion count (``_inversions``); that count decides when to stop
   and is the reported ``Layout.crossings``.
4. **Coordinates.** y from the layer (layer heights from the tallest node). x by an iterative
   balancing, vectorised over all nodes: every node is pulled to the weighted mean of its
   neighbours (dummy-to-dummy segments weigh most, so long edges come out straight), then each
   layer is made non-overlapping again by a projection that keeps its order and minimum gaps.

Live graphs: ``layout(graph, previous=old_layout)`` keeps the nodes of ``old_layout``: their layers
only move when an edge forces them to, their left-to-right order within a layer is kept (new nodes
are slotted in by barycenter), their x is anchored to the old one, and the result is translated so
that the old nodes stay where they were.

``count_crossings(graph, layers, xs)`` counts the crossings of any layered drawing (ours, or one
read from Graphviz) with the same counter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_NODE_SIZE = (140.0, 28.0)
_DUMMY_WIDTH = 0.0  # a long edge's bend point takes no room of its own, only a (smaller) gap


@dataclass
class Layout:
    """The result of :func:`layout`.

    ``positions``: node -> (x, y) of its centre; y grows with the layer (sources at the top).
    ``layers``: node -> layer index (0 = top). ``order``: the nodes of each layer, left to right.
    ``edges``: (u, v) -> polyline [(x, y), ...] from u's centre to v's centre through the bend
    points of a long edge (reversed edges still run from u to v). ``crossings``: the number of edge
    crossings of the layered drawing (bend points included). ``reversed_edges``: edges drawn
    against their direction to break cycles (empty for a DAG).
    """
    positions: dict
    layers: dict
    order: list
    edges: dict
    crossings: int
    reversed_edges: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict, repr=False)

    @property
    def bounds(self):
        """(xmin, ymin, xmax, ymax) of the node boxes."""
        if not self.positions:
            return (0.0, 0.0, 0.0, 0.0)
        xs0 = [x - self.sizes[n][0] / 2 for n, (x, _) in self.positions.items()]
        xs1 = [x + self.sizes[n][0] / 2 for n, (x, _) in self.positions.items()]
        ys0 = [y - self.sizes[n][1] / 2 for n, (_, y) in self.positions.items()]
        ys1 = [y + self.sizes[n][1] / 2 for n, (_, y) in self.positions.items()]
        return (min(xs0), min(ys0), max(xs1), max(ys1))


# --------------------------------------------------------------------------------------------
# crossing counting


def _inversions(a, group=None, ngroups=0):
    """Number of pairs i < j with a[i] > a[j], by a bottom-up merge sort in numpy (O(n log^2 n)
    in C, no Python loop per element). With ``group`` (the group of each element, groups of
    consecutive elements), also the count per group of the later element of each pair."""
    a = np.asarray(a, dtype=np.int64)
    n = len(a)
    per = np.zeros(ngroups, dtype=np.int64) if group is not None else None
    if n < 2:
        return (0, per) if group is not None else 0
    # Ranks so that (value + block * big) cannot overflow whatever the input values are.
    _, vals = np.unique(a, return_inverse=True)
    vals = vals.astype(np.int64)
    big = np.int64(n + 1)
    idx = np.arange(n, dtype=np.int64)
    orig = idx.copy()  # which input element sits at each position (for per-group counts)
    total = 0
    width = 1
    while width < n:
        pair = idx // (2 * width)
        in_b = (idx % (2 * width)) >= width
        key = vals + pair * big
        # The A halves, read in index order, are globally sorted (each half sorted, pairs offset).
        ka = key[~in_b]
        kb = key[in_b]
        pb = pair[in_b]
        greater = np.searchsorted(ka, (pb + 1) * big, side="left") - np.searchsorted(ka, kb, side="right")
        total += int(greater.sum())
        if group is not None:
            per += np.bincount(group[orig[in_b]], weights=greater, minlength=ngroups).astype(np.int64)
        perm = np.argsort(key, kind="stable")
        vals = key[perm] - pair * big
        orig = orig[perm]
        width *= 2
    return (total, per) if group is not None else total


def _segment_crossings(gap, upper, lower, ngaps=0, per_gap=False):
    """Crossings among segments between consecutive layers: segment s joins position upper[s] in
    layer gap[s] to position lower[s] in layer gap[s] + 1. Two segments of the same gap cross when
    their upper and lower positions are in opposite orders (sharing an end is no crossing)."""
    gap = np.asarray(gap, dtype=np.int64)
    if len(gap) < 2:
        return (0, np.zeros(ngaps, dtype=np.int64)) if per_gap else 0
    upper = np.asarray(upper, dtype=np.int64)
    lower = np.asarray(lower, dtype=np.int64)
    s = np.lexsort((lower, upper, gap))
    # Lower ends offset by gap so that segments of different gaps never count as inverted.
    key = lower[s] + gap[s] * (int(lower.max()) + 1)
    if per_gap:
        return _inversions(key, gap[s], ngaps)
    return _inversions(key)


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
    return _segment_crossings(pl[sg[:, 0]], rank[sg[:, 0]], rank[sg[:, 1]])


# --------------------------------------------------------------------------------------------
# phase 1 and 2: acyclic orientation, layering


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


def _assign_layers(n, pred, succ, topo, lower_bound=None, movable=None, rounds=4, limit=24):
    """Longest-path layering from the sources, then block moves that shorten the edges (a cheap
    stand-in for Graphviz's network simplex, which is too slow in Python). Moving node v down one
    layer drags along every node that an edge keeps exactly one layer below a dragged node (its
    "tight" successors, transitively); the block S moves if that shortens the edges in total, i.e.
    if its nodes have more edges leaving S than entering it, and then by as many layers as the
    first edge out of S allows. Same upwards. Without this a parameter's ``leaf ->
    AccumulateGrad`` chain would sit in layer 0 with an edge hundreds of layers long to the op
    that uses it. Blocks are capped at ``limit`` nodes (bigger ones rarely pay and cost time) and
    led by a node whose own edges get shorter.
    ``lower_bound`` (an old layout's layers) and ``movable`` (the new nodes) keep old nodes in
    their layers unless an edge forces them down."""
    layer = [0] * n
    for v in topo:
        p = pred[v]
        lv = max([layer[u] for u in p]) + 1 if p else 0
        if lower_bound is not None and lower_bound[v] is not None and lower_bound[v] > lv:
            lv = lower_bound[v]
        layer[v] = lv
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
    if movable is not None:
        # New sources go just above their successors (may be above layer 0: renormalised later).
        for v in topo[::-1]:
            if movable[v] and not pred[v] and succ[v]:
                layer[v] = min([layer[w] for w in succ[v]]) - 1
    return layer


# --------------------------------------------------------------------------------------------
# the layered graph with dummy nodes


class _Proper:
    """The layered graph with every long edge split into unit segments through dummy nodes.
    Nodes 0..n-1 are the graph's nodes, n.. the dummies. ``chains[e]`` lists the nodes along
    (oriented) edge e, top to bottom."""

    def __init__(self, n, layer, ea, eb):
        layer = np.asarray(layer, dtype=np.int64)
        ea = np.asarray(ea, dtype=np.int64)
        eb = np.asarray(eb, dtype=np.int64)
        ne = len(ea)
        span = layer[eb] - layer[ea] if ne else np.zeros(0, dtype=np.int64)
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
        last = k == kspan
        self.seg_a = chain[~last]                    # upper end of each unit segment
        self.seg_b = chain[np.flatnonzero(~last) + 1]  # lower end
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
            # Pushed in reverse so the first neighbour (first argument of an op) is walked first.
            for w in reversed(down[v]):
                if not seen[w]:
                    stack.append(w)
            for w in reversed(up[v]):
                if not seen[w]:
                    stack.append(w)
    return layers


class _Orderer:
    """Barycenter sweeps and transpositions over the per-layer lists of node ids (kept in place),
    restricted to the layers around gaps that still have crossings."""

    def __init__(self, p, layers, keep=None):
        self.p = p
        self.layers = layers
        self.pos = [0] * p.size
        for lst in layers:
            for i, v in enumerate(lst):
                self.pos[v] = i
        # keep[v]: a rank that the sweeps must respect among the kept nodes of a layer (stability)
        self.keep = keep
        self.seg_gap = p.layer[p.seg_a]

    def crossings(self):
        p = self.p
        pos = np.asarray(self.pos, dtype=np.int64)
        return _segment_crossings(self.seg_gap, pos[p.seg_a], pos[p.seg_b],
                                  max(p.nlayers - 1, 0), per_gap=True)

    def _reorder(self, l, nbrs, reverse):
        """Sort layer l by the barycenter of each node's neighbours in the adjacent layer (nodes
        without such neighbours keep their slot); ties keep their order, or with ``reverse``
        swap it (as Graphviz does on alternate passes, to get off plateaus). True if the order
        changed."""
        lst = self.layers[l]
        pos = self.pos
        movable, slots = [], []
        for i, v in enumerate(lst):
            ns = nbrs[v]
            if ns:
                if len(ns) == 1:
                    b = pos[ns[0]]
                else:
                    b = sum([pos[u] for u in ns]) / len(ns)
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
        return True

    def sweep(self, down, active, reverse=False):
        """One sweep down (each layer by the one above) or up; a layer is reordered if it is
        active (next to a gap with crossings) or its neighbour layer just changed."""
        nbrs = self.p.up if down else self.p.down
        rng = range(1, len(self.layers)) if down else range(len(self.layers) - 2, -1, -1)
        prev_changed = False
        for l in rng:
            if len(self.layers[l]) < 2 or not (active[l] or prev_changed):
                prev_changed = False
                continue
            prev_changed = self._reorder(l, nbrs, reverse)

    def _pair_crossings(self, u, v):
        """Crossings between the edges of u and those of v when u is just left of v."""
        pos = self.pos
        c = 0
        for nb in (self.p.up, self.p.down):
            pv = [pos[b] for b in nb[v]]
            if not pv:
                continue
            for a in nb[u]:
                pa = pos[a]
                for pb in pv:
                    if pa > pb:
                        c += 1
        return c

    def transpose(self, active, reverse=False):
        """Swap neighbours in the active layers while that removes crossings (Gansner et al.);
        with ``reverse`` also when it changes nothing (a sideways move)."""
        keep = self.keep
        pos = self.pos
        for l, lst in enumerate(self.layers):
            if not active[l] or len(lst) < 2:
                continue
            for _ in range(4):
                improved = False
                for i in range(len(lst) - 1):
                    u, v = lst[i], lst[i + 1]
                    if keep is not None and keep[u] is not None and keep[v] is not None:
                        continue
                    c0 = self._pair_crossings(u, v)
                    if c0 == 0:
                        continue
                    c1 = self._pair_crossings(v, u)
                    if c1 < c0 or (reverse and c1 == c0):
                        lst[i], lst[i + 1] = v, u
                        pos[u], pos[v] = i + 1, i
                        improved = improved or c1 < c0
                if not improved:
                    break

    def snapshot(self):
        return [list(lst) for lst in self.layers]

    def restore(self, snap):
        self.layers = snap
        for lst in snap:
            for i, v in enumerate(lst):
                self.pos[v] = i


def _reduce_crossings(orderer, max_iter=24, patience=4):
    """Alternate down/up sweeps + transpose on the layers around crossings; keep the best order
    seen; stop when the count is 0 or has not improved for ``patience`` iterations."""
    best, per_gap = orderer.crossings()
    best_snap = orderer.snapshot()
    stale = 0
    for it in range(max_iter):
        if best == 0:
            break
        nl = len(orderer.layers)
        active = np.zeros(nl, dtype=bool)
        hot = np.flatnonzero(per_gap)
        active[hot] = True
        active[np.minimum(hot + 1, nl - 1)] = True
        active = active.tolist()
        reverse = it % 4 < 2
        orderer.sweep(it % 2 == 0, active, reverse)
        orderer.transpose(active, not reverse)
        count, per_gap = orderer.crossings()
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


def _project(d, cum, lid):
    """Closest-ish x to the wishes ``d`` (nodes sorted by layer, then order) that keeps every
    layer's order and minimum gaps (``cum``: the minimum offset of each node from the first of
    its layer). With y = d - cum the constraint is "y non-decreasing within a layer"; the mean of
    the running max from the left and the running min from the right satisfies it and splits a
    clash evenly between both sides. Offsets per layer keep the running max/min from leaking
    across layers, so all layers are done in two numpy calls."""
    y = d - cum
    if len(y) == 0:
        return y
    big = float(y.max() - y.min()) + 1.0
    off = lid * big
    z = y + off
    fwd = np.maximum.accumulate(z)
    bwd = np.minimum.accumulate(z[::-1])[::-1]
    return (fwd + bwd) / 2 - off + cum


def _x_coordinates(p, layers, widths, node_gap, iterations, anchor=None, anchor_w=None, init=None):
    """x of every node of the layered graph (indexed by node id)."""
    order = np.fromiter((v for lst in layers for v in lst), dtype=np.int64, count=p.size)
    lid = p.layer[order].astype(float)
    w = widths[order]
    real = order < p.n
    # minimum distance between consecutive nodes of a layer: half widths + a gap (smaller next
    # to the bend points of long edges, so that bundles of long edges stay tight)
    gap = np.where(real[1:] & real[:-1], node_gap, node_gap / 2.0)
    sep = (w[1:] + w[:-1]) / 2 + gap
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
    den = np.bincount(sa, sw, nn) + np.bincount(sb, sw, nn)
    if anchor is not None:
        aw = anchor_w[order]
        ax = np.nan_to_num(anchor[order])
        den = den + aw
    has = den > 0
    den = np.where(has, den, 1.0)
    if init is not None:
        x = _project(init[order], cum, lid)
    else:
        # every layer packed and centred on 0
        ends = np.append(starts[1:] - 1, nn - 1)
        centre = np.repeat(cum[ends] / 2, np.diff(np.append(starts, nn)))
        x = cum - centre
    for _ in range(iterations):
        num = np.bincount(sa, sw * x[sb], nn) + np.bincount(sb, sw * x[sa], nn)
        if anchor is not None:
            num = num + aw * ax
        d = np.where(has, num / den, x)
        x = _project(d, cum, lid)
    out = np.empty(p.size)
    out[order] = x
    return out


# --------------------------------------------------------------------------------------------
# the entry point


def layout(graph, node_size=None, *, layer_gap=40.0, node_gap=20.0, previous=None,
           iterations=60):
    """Lay out ``graph`` (a networkx DiGraph) in layers; see the module docstring.

    ``node_size(node) -> (width, height)``, default :data:`DEFAULT_NODE_SIZE`. ``layer_gap``: the
    vertical space between layers, ``node_gap``: the horizontal space between neighbouring boxes.
    ``previous``: an earlier :class:`Layout` of a subgraph of ``graph`` (a live graph that grew):
    its nodes keep their order and (nearly) their positions. Cycles are broken by reversing edges
    (listed in ``Layout.reversed_edges``, still drawn from u to v); self-loops are not drawn.
    """
    nodes = list(graph.nodes)
    n = len(nodes)
    index = {v: i for i, v in enumerate(nodes)}
    sizes = {}
    for v in nodes:
        sizes[v] = tuple(map(float, node_size(v))) if node_size is not None else DEFAULT_NODE_SIZE
    if n == 0:
        return Layout({}, {}, [], {}, 0, [], sizes)
    edge_list = [(u, v) for u, v in graph.edges if u != v]
    eu = [index[u] for u, _ in edge_list]
    ev = [index[v] for _, v in edge_list]
    succ0 = [[] for _ in range(n)]
    indeg = [0] * n
    for a, b in zip(eu, ev):
        succ0[a].append(b)
        indeg[b] += 1
    topo = _topological_order(n, succ0, indeg)
    rank = [0] * n
    for i, v in enumerate(topo):
        rank[v] = i
    # orient every edge along the topological order (reversing the few that close a cycle)
    ea, eb, rev = [], [], []
    seen_pairs = set()
    for a, b in zip(eu, ev):
        r = rank[a] > rank[b]
        if r:
            a, b = b, a
        rev.append(r)
        ea.append(a)
        eb.append(b)
    pred = [[] for _ in range(n)]
    succ = [[] for _ in range(n)]
    for a, b in zip(ea, eb):
        if (a, b) in seen_pairs:  # u->v and v->u both: one layered edge is enough for layering
            continue
        seen_pairs.add((a, b))
        succ[a].append(b)
        pred[b].append(a)

    keep_layer = None
    movable = None
    if previous is not None:
        keep_layer = [previous.layers.get(v) for v in nodes]
        movable = [lb is None for lb in keep_layer]
    layer = _assign_layers(n, pred, succ, topo, keep_layer, movable)
    lmin = min(layer)
    if lmin != 0:
        layer = [l - lmin for l in layer]

    p = _Proper(n, layer, ea, eb)
    nl = p.nlayers
    widths = np.full(p.size, _DUMMY_WIDTH)
    widths[:n] = [sizes[v][0] for v in nodes]

    # previous layout: keys for the initial order, ranks to respect, x anchors
    keep = prefer = anchor = anchor_w = init = None
    if previous is not None:
        anchor = np.full(p.size, np.nan)
        for i, v in enumerate(nodes):
            if v in previous.positions:
                anchor[i] = previous.positions[v][0]
        dummies = np.flatnonzero(p.dummy_edge >= 0)
        for d, e, k in zip(dummies.tolist(), p.dummy_edge[dummies].tolist(), p.dummy_k[dummies].tolist()):
            u, v = edge_list[e]
            old = previous.edges.get((u, v))
            if old is not None and len(old) == p.clen[e]:
                anchor[d] = old[p.clen[e] - 1 - k][0] if rev[e] else old[k][0]
        known = ~np.isnan(anchor)
        # keys for new nodes: the mean key of known neighbours, spread a few steps
        key = anchor.copy()
        for _ in range(4):
            missing = np.isnan(key)
            if not missing.any():
                break
            kk = np.nan_to_num(key)
            ok = (~np.isnan(key)).astype(float)
            s = np.bincount(p.seg_a, kk[p.seg_b] * ok[p.seg_b], p.size) + np.bincount(p.seg_b, kk[p.seg_a] * ok[p.seg_a], p.size)
            c = np.bincount(p.seg_a, ok[p.seg_b], p.size) + np.bincount(p.seg_b, ok[p.seg_a], p.size)
            fill = missing & (c > 0)
            key[fill] = s[fill] / c[fill]
        hi = np.nanmax(key) if (~np.isnan(key)).any() else 0.0
        key = np.where(np.isnan(key), hi + 1.0 + np.arange(p.size), key)
        prefer = key.tolist()
        keep = [k if kn else None for k, kn in zip(prefer, known.tolist())]
        anchor_w = np.where(known, 4.0, 0.0)
        init = key

    if prefer is None:
        # walk from the root: the single source (edges along the gradient) or the single sink
        # (torchviz's direction), whichever side has fewer ends
        srcs = [v for v in topo if not pred[v]]
        snks = [v for v in topo if not succ[v]]
        starts = srcs if len(srcs) <= len(snks) else snks
        layers_list = _initial_order(p, starts)
    else:
        layers_list = _initial_order(p, (), prefer)
    orderer = _Orderer(p, layers_list, keep)
    crossings = _reduce_crossings(orderer)
    layers_list = orderer.layers

    xs = _x_coordinates(p, layers_list, widths, node_gap, iterations, anchor, anchor_w, init)
    # y: layers stacked, each as tall as its tallest box
    heights = np.zeros(nl)
    np.maximum.at(heights, np.asarray(layer, dtype=np.int64), [sizes[v][1] for v in nodes])
    ly = np.zeros(nl)
    if nl > 1:
        ly[1:] = np.cumsum((heights[:-1] + heights[1:]) / 2 + layer_gap)
    ys = ly[p.layer]

    if previous is not None:
        # translate so that the nodes that were there stay put (a new root above shifts layers)
        old = [i for i, v in enumerate(nodes) if v in previous.positions]
        if old:
            dx = np.median([previous.positions[nodes[i]][0] - xs[i] for i in old])
            dy = np.median([previous.positions[nodes[i]][1] - ys[i] for i in old])
            xs = xs + dx
            ys = ys + dy

    xl, yl = xs.tolist(), ys.tolist()
    positions = {v: (xl[i], yl[i]) for i, v in enumerate(nodes)}
    layers_out = {v: layer[i] for i, v in enumerate(nodes)}
    order = [[nodes[v] for v in lst if v < n] for lst in layers_list]
    chain = p.chain.tolist()
    cs, cl = p.cstart.tolist(), p.clen.tolist()
    edges = {}
    for e, (u, v) in enumerate(edge_list):
        pts = [(xl[c], yl[c]) for c in chain[cs[e]:cs[e] + cl[e]]]
        edges[(u, v)] = pts[::-1] if rev[e] else pts
    reversed_edges = [edge_list[e] for e in range(len(edge_list)) if rev[e]]
    return Layout(positions, layers_out, order, edges, int(crossings), reversed_edges, sizes)
