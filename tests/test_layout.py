"""gradviz.layout.layered: layered layout of autograd graphs (no Qt involved)."""
import itertools
import os
import random
import threading

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gradviz.trace.dot import read_dot
from gradviz.layout.layered import (DEFAULT_NODE_SIZE, _grouped_inversions, _segment_crossings,
                            count_crossings, layout)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "..", "shared", "data")


def shared_graph(name):
    path = os.path.join(DATA, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not available")
    with open(path) as f:
        return read_dot(f.read())


def random_dag(n, m, seed, max_span=8):
    """Edges from lower to higher index, mostly short spans, a few long ones."""
    rng = random.Random(seed)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    while g.number_of_edges() < m:
        a = rng.randrange(n - 1)
        span = rng.randint(1, max_span) if rng.random() < 0.9 else rng.randint(1, n)
        g.add_edge(a, min(n - 1, a + span))
    return g


def forward_graph(n, seed):
    """A graph as the gradient flows: op i consumes 1-2 recent results, edge i -> j (j < i)."""
    rng = random.Random(seed)
    g = nx.DiGraph()
    g.add_node(0)
    for i in range(1, n):
        g.add_node(i)
        for j in rng.sample(range(max(0, i - 6), i), min(i, rng.choice([1, 1, 2]))):
            g.add_edge(i, j)
    return g


def recount(g, lay):
    """Crossings of a Layout recounted from its public output only."""
    xs = {v: p[0] for v, p in lay.positions.items()}
    bends = {e: [x for x, _ in pts[1:-1]] for e, pts in lay.edges.items()}
    return count_crossings(g, lay.layers, xs, bends)


def check_layout(g, lay, node_gap=20.0):
    """The invariants every layout must satisfy."""
    assert set(lay.positions) == set(g.nodes)
    assert set(lay.layers) == set(g.nodes)
    placed = [v for row in lay.order for v in row]
    assert len(placed) == len(set(placed)) == g.number_of_nodes() and set(placed) == set(g.nodes)
    reversed_edges = set(lay.reversed_edges)
    for u, v in g.edges:
        if u == v:
            continue
        pts = lay.edges[(u, v)]
        assert pts[0] == pytest.approx(lay.positions[u])
        assert pts[-1] == pytest.approx(lay.positions[v])
        ys = [y for _, y in pts]
        if (u, v) in reversed_edges:
            assert lay.layers[v] < lay.layers[u]
            assert all(a > b for a, b in zip(ys, ys[1:]))
        else:
            assert lay.layers[v] > lay.layers[u]
            assert all(a < b for a, b in zip(ys, ys[1:])), "y must increase along an edge"
            # one bend point per layer crossed
            assert len(pts) == lay.layers[v] - lay.layers[u] + 1
    for layer, row in enumerate(lay.order):
        assert all(lay.layers[v] == layer for v in row)
        ys = {lay.positions[v][1] for v in row}
        assert len(ys) <= 1, "a layer shares one y"
        for a, b in zip(row, row[1:]):
            (xa, _), (xb, _) = lay.positions[a], lay.positions[b]
            wa, wb = lay.sizes[a][0], lay.sizes[b][0]
            assert xb - xa >= (wa + wb) / 2 + node_gap - 1e-6, f"{a} and {b} overlap"
    # layers stack downwards without the boxes of one layer reaching into the next
    rows = [row for row in lay.order if row]
    box_top = [min(lay.positions[v][1] - lay.sizes[v][1] / 2 for v in row) for row in rows]
    box_bottom = [max(lay.positions[v][1] + lay.sizes[v][1] / 2 for v in row) for row in rows]
    assert all(b < t for b, t in zip(box_bottom, box_top[1:]))
    assert lay.crossings == recount(g, lay)


# --- crossing counting ---------------------------------------------------------------------------


def brute_crossings(g, layers, xs):
    """Pairs of unit-span edges of the same gap whose ends are in opposite orders."""
    edges = [(u, v) if layers[u] < layers[v] else (v, u) for u, v in g.edges]
    count = 0
    for (a, b), (c, d) in itertools.combinations(edges, 2):
        if layers[a] == layers[c] and (xs[a] - xs[c]) * (xs[b] - xs[d]) < 0:
            count += 1
    return count


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_counter_agrees_with_brute_force(data):
    nlayers = data.draw(st.integers(2, 5))
    widths = [data.draw(st.integers(1, 7)) for _ in range(nlayers)]
    g = nx.DiGraph()
    layers, xs = {}, {}
    for k, w in enumerate(widths):
        perm = data.draw(st.permutations(range(w)))
        for i in range(w):
            layers[(k, i)] = k
            xs[(k, i)] = float(perm[i]) * 1.5
            g.add_node((k, i))
    for k in range(nlayers - 1):
        for i in range(widths[k]):
            for j in range(widths[k + 1]):
                if data.draw(st.booleans()):
                    g.add_edge((k, i), (k + 1, j))
    assert count_crossings(g, layers, xs) == brute_crossings(g, layers, xs)


def test_counter_long_edges_equal_explicit_bend_nodes():
    rng = random.Random(3)
    for _ in range(30):
        g = random_dag(25, 45, rng.randrange(10 ** 6))
        layers = {v: rng.randrange(6) for v in g}
        for u, v in list(g.edges):
            if layers[u] == layers[v]:
                g.remove_edge(u, v)
        xs = {v: rng.random() for v in g}
        # the same drawing with every bend point made a node
        h = nx.DiGraph()
        hl, hx = dict(layers), dict(xs)
        h.add_nodes_from(g)
        bends = {}
        for u, v in g.edges:
            a, b = (u, v) if layers[u] < layers[v] else (v, u)
            prev = a
            bends[(u, v)] = []
            for k in range(layers[a] + 1, layers[b]):
                d = ("bend", u, v, k)
                hl[d], hx[d] = k, rng.random()
                bends[(u, v)].append(hx[d])
                h.add_edge(prev, d)
                prev = d
            if layers[u] > layers[v]:
                bends[(u, v)].reverse()
            h.add_edge(prev, b)
        assert count_crossings(g, layers, xs, bends) == brute_crossings(h, hl, hx)


def test_grouped_inversions_small_and_large_groups():
    rng = np.random.default_rng(0)
    for sizes in ([1, 2, 3], [70, 5, 130, 0, 1], [300]):
        gid = np.repeat(np.arange(len(sizes)), sizes)
        vals = rng.integers(0, 20, len(gid))
        per = _grouped_inversions(vals, gid, len(sizes))
        start = 0
        for g, s in enumerate(sizes):
            part = vals[start:start + s]
            assert per[g] == sum(1 for i in range(s) for j in range(i + 1, s) if part[i] > part[j])
            start += s


def test_segment_crossings_share_an_end_is_not_a_crossing():
    # gap 0: segments (0->1) and (1->0) cross; (0->0) and (0->1) share an end
    assert list(_segment_crossings([0, 0], [0, 1], [1, 0], 1)) == [1]
    assert list(_segment_crossings([0, 0], [0, 0], [0, 1], 1)) == [0]
    assert list(_segment_crossings([0, 1], [0, 1], [1, 0], 2)) == [0, 0]


# --- layouts -------------------------------------------------------------------------------------


def test_empty_single_and_disconnected():
    assert layout(nx.DiGraph()).positions == {}
    g = nx.DiGraph()
    g.add_node("x")
    lay = layout(g)
    assert lay.layers == {"x": 0} and lay.crossings == 0
    g = nx.DiGraph([(1, 2), (3, 4), (4, 5)])
    g.add_node(6)
    check_layout(g, layout(g))


@pytest.mark.parametrize("seed", range(6))
def test_random_dags_invariants(seed):
    g = random_dag(60, 110, seed)
    rng = random.Random(seed)
    sizes = {v: (rng.uniform(30, 200), rng.uniform(15, 60)) for v in g}
    lay = layout(g, sizes.get, node_gap=12.0)
    assert lay.sizes == sizes
    check_layout(g, lay, node_gap=12.0)


@pytest.mark.parametrize("reverse", [False, True])
def test_trees_have_no_crossings(reverse):
    for seed in range(5):
        t = nx.random_labeled_tree(40, seed=seed)
        g = nx.bfs_tree(t, 0)  # out-tree from root 0
        if reverse:
            g = g.reverse()  # in-tree: many sources, one sink (torchviz's direction)
        lay = layout(g)
        check_layout(g, lay)
        assert lay.crossings == 0


def test_diamond_and_known_small_graphs():
    diamond = nx.DiGraph([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    lay = layout(diamond)
    check_layout(diamond, lay)
    assert lay.crossings == 0
    assert lay.layers == {"a": 0, "b": 1, "c": 1, "d": 2}
    # a residual block: x -> f -> g -> add, x -> add (the skip edge gets one bend point per layer)
    res = nx.DiGraph([("x", "f"), ("f", "g"), ("g", "add"), ("x", "add")])
    lay = layout(res)
    check_layout(res, lay)
    assert lay.crossings == 0 and len(lay.edges[("x", "add")]) == 4
    # K3,3 on two layers has C(3,2)**2 = 9 crossings whatever the order
    k33 = nx.DiGraph([(u, v) for u in "abc" for v in "xyz"])
    assert layout(k33).crossings == 9


def test_parameter_chain_is_pulled_next_to_its_consumer():
    # torchviz direction: leaf -> AccumulateGrad -> op; the leaf chain must not start in layer 0
    g = nx.DiGraph([(i, i + 1) for i in range(30)])
    g.add_edges_from([("w", "acc"), ("acc", 25)])
    lay = layout(g)
    assert lay.layers["acc"] == lay.layers[25] - 1 and lay.layers["w"] == lay.layers[25] - 2
    assert lay.stats["dummies"] == 0


def test_crossing_reduction_beats_initial_order():
    before = after = 0
    for seed in range(8):
        g = random_dag(80, 160, 100 + seed)
        lay = layout(g)
        history = lay.stats["crossing_history"]
        assert lay.crossings == min(history) <= history[0]
        before += history[0]
        after += lay.crossings
    assert after < 0.6 * before, (before, after)


def test_layout_is_deterministic():
    g = random_dag(50, 90, 7)
    a, b = layout(g), layout(g)
    assert a.positions == b.positions and a.order == b.order


def test_resnet18_from_dot_file():
    g = shared_graph("resnet18-autograd.dot")
    lay = layout(g)
    check_layout(g, lay)
    # Graphviz dot draws it without crossings and with 34 bend points (measured); so do we
    assert lay.crossings == 0
    assert lay.stats["dummies"] <= 34
    # compact: not much wider than its widest layer packed tight
    widest = max(sum(lay.sizes[v][0] + 20 for v in row) for row in lay.order)
    x0, _, x1, _ = lay.bounds
    assert x1 - x0 < 2.5 * widest


def test_transformer60_from_dot_file():
    g = shared_graph("transformer60-autograd.dot")
    lay = layout(g)
    check_layout(g, lay)
    # measured: dot's drawing has 236 crossings and 3,086 bend points; ours 0 and 3,086
    assert lay.crossings == 0
    assert lay.stats["dummies"] <= 3086


# --- live graphs ---------------------------------------------------------------------------------


def displacement(old, new):
    d = [np.hypot(new.positions[v][0] - x, new.positions[v][1] - y)
         for v, (x, y) in old.positions.items()]
    return float(np.median(d)), float(np.max(d))


@pytest.mark.parametrize("kind", ["new root", "new leaf"])
def test_adding_a_node_moves_existing_nodes_little(kind):
    w, gap = DEFAULT_NODE_SIZE[0], 20.0
    fresh_moves = []
    for seed in range(8):
        g = forward_graph(50, seed)
        old = layout(g)
        h = g.copy()
        if kind == "new root":
            h.add_edge(50, 49)  # the forward pass made a new op consuming the last result
        else:
            h.add_edge(random.Random(seed).randrange(50), 50)  # a new leaf (e.g. a parameter)
        new = layout(h, previous=old)
        check_layout(h, new)
        median, worst = displacement(old, new)
        assert median < 1.0
        assert worst <= 1.1 * (w + gap), f"seed {seed}: a node moved {worst:.0f}"
        # old nodes keep their relative order in every layer
        for row in new.order:
            kept = [v for v in row if v in old.layers]
            assert kept == sorted(kept, key=lambda v: old.positions[v][0])
        fresh_moves.append(displacement(old, layout(h))[0])
    assert max(fresh_moves) > 10 * 1.0  # without previous=..., things do move


def test_previous_with_growing_graph_step_by_step():
    # the live case: one node at a time, each layout built on the one before
    slot = DEFAULT_NODE_SIZE[0] + 20.0
    for seed in range(2):
        g = forward_graph(40, seed)
        lay = layout(g.subgraph(range(5)).copy())
        for n in range(6, 41):
            sub = g.subgraph(range(n)).copy()
            new = layout(sub, previous=lay)
            check_layout(sub, new)
            median, worst = displacement(lay, new)
            # measured: median <= 24 px (a few-node graph), worst 198 px (a slot + bend points)
            assert median < 0.25 * DEFAULT_NODE_SIZE[0] and worst < 1.5 * slot, (seed, n)
            lay = new


# --- cycles --------------------------------------------------------------------------------------


def run_with_deadline(fn, seconds=10):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "layout hung"
    return out[0]


def test_cycles_are_broken_not_hung():
    cycle = nx.DiGraph([(0, 1), (1, 2), (2, 0)])
    lay = run_with_deadline(lambda: layout(cycle))
    check_layout(cycle, lay)
    assert len(lay.reversed_edges) == 1
    both = nx.DiGraph([("a", "b"), ("b", "a"), ("b", "b"), ("b", "c")])
    lay = run_with_deadline(lambda: layout(both))
    assert ("b", "b") not in lay.edges and len(lay.reversed_edges) == 1
    check_layout(both, lay)
    rng = random.Random(5)
    for seed in range(5):
        g = nx.gnm_random_graph(60, 150, seed=seed, directed=True)
        g.add_edges_from((rng.randrange(60), rng.randrange(60)) for _ in range(10))
        lay = run_with_deadline(lambda g=g: layout(g))
        check_layout(g, lay)
        flipped = set(lay.reversed_edges)
        acyclic = nx.DiGraph([e for e in g.edges if e not in flipped and e[0] != e[1]])
        assert nx.is_directed_acyclic_graph(acyclic)


# --- shared nodes: stand-ins ---------------------------------------------------------------------


def shared_program(n_leaves=200, steps=1200):
    """The issue's program: leaves used in many places (as an unrolled RNN's weights are)."""
    import gradviz
    import gradviz.engine as torch
    with gradviz.record() as rec:
        xs = [torch.rand(3, requires_grad=True) for _ in range(n_leaves)]
        acc = xs[0]
        for i in range(1, steps):
            acc = (acc * xs[i % n_leaves]).tanh() + xs[(7 * i) % n_leaves]
        acc.sum().backward()
    return rec.trace.graph


def accumulators(g):
    return [v for v, d in g.nodes(data=True) if d.get("kind") == "accumulate_grad"]


def drawn_graph(g, lay):
    """The picture drawn: the graph with each stand-in a node of its own (("standin", key)),
    plus its layers and x, for count_crossings."""
    h = nx.DiGraph()
    h.add_nodes_from(g)
    layers = dict(lay.layers)
    xs = {v: p[0] for v, p in lay.positions.items()}
    for k, (x, _) in lay.standins.items():
        h.add_node(("standin", k))
        layers[("standin", k)] = lay.standin_layers[k]
        xs[("standin", k)] = x
    bends = {}
    for u, v in g.edges:
        if u == v:
            continue
        k = lay.standin_of.get((u, v))
        e = (u, v) if k is None else (u, ("standin", k)) if k[0] == v else (("standin", k), v)
        h.add_edge(*e)
        bends[e] = [x for x, _ in lay.edges[(u, v)][1:-1]]
    return h, layers, xs, bends


def check_standins(g, lay, shareable, node_gap=20.0):
    """The invariants of a layout with stand-ins."""
    assert set(lay.positions) == set(g.nodes) and set(lay.layers) == set(g.nodes)
    shareable = set(shareable)
    assert set(lay.standins) == set(lay.standin_of.values()) == set(lay.standin_layers)
    for (u, v), (s, w) in lay.standin_of.items():
        assert (u, v) in g.edges and {u, v} == {s, w} and s in shareable
    # every edge is drawn, to its end or to its stand-in, one layer away from the neighbour
    for u, v in g.edges:
        if u == v:
            continue
        pts = lay.edges[(u, v)]
        k = lay.standin_of.get((u, v))
        if k is None:
            assert pts[0] == pytest.approx(lay.positions[u]) and pts[-1] == pytest.approx(lay.positions[v])
            continue
        s, w = k
        sxy = lay.standins[k]
        if s == v:
            assert pts[0] == pytest.approx(lay.positions[u]) and pts[-1] == pytest.approx(sxy)
        else:
            assert pts[0] == pytest.approx(sxy) and pts[-1] == pytest.approx(lay.positions[v])
        assert len(pts) == 2 and abs(lay.standin_layers[k] - lay.layers[w]) == 1
    # each shared node keeps one real edge to an outer neighbour (its anchor); another real one
    # can only be the anchor edge of a shared node at its other end
    shared = {k[0] for k in lay.standins}

    def outer_real(s):
        return {w for w in nx.all_neighbors(g, s)
                if g.degree(w) > g.number_of_edges(w, s) + g.number_of_edges(s, w)
                and (w, s) not in lay.standin_of and (s, w) not in lay.standin_of}

    for s in shared:
        real = outer_real(s)
        assert len(real) >= 1, s
        assert len(real - shareable) <= 1, (s, real)
    # no overlaps: per layer, all boxes (nodes and stand-ins) sorted by x keep the gap
    rows = {}
    for v, (x, y) in lay.positions.items():
        rows.setdefault(lay.layers[v], []).append((x, lay.sizes[v][0], y))
    for k, (x, y) in lay.standins.items():
        rows.setdefault(lay.standin_layers[k], []).append((x, lay.standin_size[0], y))
    for row in rows.values():
        row.sort()
        assert len({y for _, _, y in row}) == 1
        for (xa, wa, _), (xb, wb, _) in zip(row, row[1:]):
            assert xb - xa >= (wa + wb) / 2 + node_gap - 1e-6
    h, layers, xs, bends = drawn_graph(g, lay)
    assert lay.crossings == count_crossings(h, layers, xs, bends)


def star_chain(n=30, uses=(3, 12, 25), direction="gradient"):
    """A chain 0 -> 1 -> ... (as the gradient flows), a leaf "w" whose AccumulateGrad "acc" is
    used by the chain nodes in ``uses``; torchviz's direction is the reverse graph."""
    g = nx.DiGraph([(i, i + 1) for i in range(n)])
    g.add_edges_from((u, "acc") for u in uses)
    g.add_edge("acc", "w")
    return g if direction == "gradient" else g.reverse()


@pytest.mark.parametrize("direction", ["gradient", "torchviz"])
def test_standins_for_a_node_used_far_apart(direction):
    g = star_chain(direction=direction)
    lay = layout(g, shareable=["acc"])
    check_standins(g, lay, ["acc"])
    assert {k for k in lay.standins} == {("acc", 3), ("acc", 12)}
    # the anchor: the first use (deepest along the gradient), the node sits right next to it
    assert ("acc", 25) not in lay.standins
    assert abs(lay.layers["acc"] - lay.layers[25]) == 1
    assert abs(lay.layers["w"] - lay.layers["acc"]) == 1
    assert lay.crossings == 0 and lay.stats["dummies"] == 0
    # without shareable, nothing changes from today's layout
    plain = layout(g)
    assert plain.standins == {} and plain.standin_of == {}
    assert plain.positions == layout(g, shareable=[]).positions


def test_standins_only_past_the_rule_and_only_for_shareable_nodes():
    # neighbours within 3 layers of each other: no stand-ins
    g = star_chain(uses=(10, 12, 13))
    lay = layout(g, shareable=["acc"])
    assert lay.standins == {}
    check_layout(g, lay)
    # far apart, but not shareable: a real node with long edges, as before
    g = star_chain()
    lay = layout(g, shareable=[5])
    assert lay.standins == {}
    assert lay.positions == layout(g).positions
    # shareable nodes that do not qualify are laid out exactly as without shareable
    g = shared_graph("resnet18-autograd.dot")
    acc = [v for v, d in g.nodes(data=True) if d.get("label") == "AccumulateGrad"]
    assert acc
    assert layout(g, shareable=acc).positions == layout(g).positions


def test_standins_on_random_graphs():
    total = 0
    for seed in range(6):
        g = random_dag(60, 110, seed)
        rng = random.Random(seed)
        shareable = rng.sample(sorted(g), 15)
        lay = layout(g, shareable=shareable, standin_size=(30, 14))
        check_standins(g, lay, shareable)
        assert lay.standin_size == (30.0, 14.0)
        # neither stand-ins nor anything else for nodes outside shareable
        assert all(k[0] in shareable for k in lay.standins)
        total += len(lay.standins)
    assert total > 20


def test_standins_on_the_issue_program():
    g = shared_program()
    assert g.number_of_nodes() > 3900
    acc = accumulators(g)
    lay = layout(g, shareable=acc)
    check_standins(g, lay, acc)
    shared = {k[0] for k in lay.standins}
    assert len(shared) == len(acc)  # every leaf is used far apart
    # each shared AccumulateGrad: one stand-in per use but the anchor
    assert len(lay.standins) == sum(g.in_degree(a) - 1 for a in acc)
    assert lay.crossings == 0 and lay.stats["dummies"] == 0


def test_without_shareable_long_edges_are_bounded(monkeypatch):
    import gradviz.layout.layered as layered
    # a sharing graph laid out without stand-ins: the longest edges are drawn straight
    g = shared_program(40, 240)
    monkeypatch.setattr(layered, "_DUMMY_WORK", 2000)
    lay = layout(g)
    assert lay.stats["straight"] > 0 and lay.stats["dummies"] <= 2000
    assert lay.crossings == recount(g, lay)
    for u, v in g.edges:
        pts = lay.edges[(u, v)]
        assert pts[0] == pytest.approx(lay.positions[u]) and pts[-1] == pytest.approx(lay.positions[v])
    # random graphs, crossings recounted from the output
    for seed in range(4):
        g = random_dag(80, 160, seed, max_span=30)
        monkeypatch.setattr(layered, "_DUMMY_WORK", 50)
        lay = layout(g)
        assert lay.stats["straight"] > 0
        assert lay.crossings == recount(g, lay)


@pytest.mark.parametrize("direction", ["gradient", "torchviz"])
def test_standins_with_previous(direction):
    # the live case: a node becomes shared as the graph grows; old nodes stay put
    base = star_chain(uses=(25,), direction=direction)
    old = layout(base, shareable=["acc"])
    assert old.standins == {}
    grown = star_chain(uses=(3, 12, 25), direction=direction)
    new = layout(grown, shareable=["acc"], previous=old)
    check_standins(grown, new, ["acc"])
    assert set(new.standins) == {("acc", 3), ("acc", 12)}
    for v, (x, y) in old.positions.items():
        assert new.positions[v] == pytest.approx((x, y), abs=1.0), v
    # and again, with one more use: old stand-ins stay too
    more = grown.copy()
    if direction == "gradient":
        more.add_edge(30, "acc")
    else:
        more.add_edge("acc", 30)
    newer = layout(more, shareable=["acc"], previous=new)
    check_standins(more, newer, ["acc"])
    assert ("acc", 30) in newer.standins
    for k, (x, y) in new.standins.items():
        assert newer.standins[k] == pytest.approx((x, y), abs=1.0), k
    # and growing forward_graph-style graphs step by step with a shared node
    g = forward_graph(40, 1)
    g.add_edges_from((u, "acc") for u in (2, 15, 30))
    lay = layout(g.subgraph(list(range(10)) + ["acc"]).copy(), shareable=["acc"])
    for n in range(11, 41):
        sub = g.subgraph(list(range(n)) + ["acc"]).copy()
        new = layout(sub, shareable=["acc"], previous=lay)
        check_standins(sub, new, ["acc"])
        median, _ = displacement(lay, new)
        assert median < 0.25 * DEFAULT_NODE_SIZE[0]
        lay = new


def test_transformer60_with_shareable_is_unchanged():
    g = shared_graph("transformer60-autograd.dot")
    acc = [v for v, d in g.nodes(data=True) if d.get("label") == "AccumulateGrad"]
    lay = layout(g, shareable=acc)
    assert lay.standins == {} and lay.crossings == 0
    assert lay.positions == layout(g).positions
