"""gradviz.layout.layered against Graphviz dot, side by side in one run: layout time and edge crossings on
(a) the autograd graph of a 60-block transformer (shared/data/transformer60-autograd.dot, 5,279
    nodes, 5,517 edges), dot with its default settings;
(b) a seeded random DAG of 5,000 nodes and 10,000 edges, dot with its speed settings
    (-Gnslimit=1 -Gnslimit1=1 -Gmclimit=0.1 -Gremincross=false -Gsplines=false);
graphs whose leaves are used in many places, recorded with gradviz.record() from gradviz.engine
programs (the real trace graphs, edges along the gradient), dot with its default settings:
(c) a GRU cell (matmul, sigmoid, tanh, mul, add; 9 shared weights and biases) unrolled 150 steps;
(d) the program of issue 12: 200 leaves, each used at 12 places along a 1,200-step chain;
(e) a 4-layer transformer with tied input/output embeddings (rows of the embedding picked by
    index; logits by the same weight transposed).
For (c)-(e) gradviz runs twice: with stand-ins (shareable = the graph's AccumulateGrad nodes, as
the app lays it out) and without (the plain layout, for comparison). Dot always gets the original
graph (a drawing with stand-ins is a different, easier picture: not a fair comparison), and
crossings are counted on each one's own picture: with stand-ins, ours counts the stand-in edges
drawn, not the long edges they replace.
Targets: (a) under 0.5 s with no more crossings than dot; (b) under 1 s; (c)-(e) with stand-ins
under 1 s and no more crossings than dot where dot finishes (a dot time-out is printed as such).

How the crossings are compared: both drawings are counted by the same function,
gradviz.layout.layered.count_crossings, on the layered drawing with a bend point wherever an edge passes a
layer. Ours: our layers, order and bend points (as Layout.crossings). Dot's (from ``dot -Tplain``):
its ranks are the distinct node y values (top to bottom), the order within a rank is by node x,
and a long edge passes each rank in between at the x where dot's drawn edge (the Bezier curve of
-Tplain, sampled; with splines=false the straight line dot draws) is at that rank's y. Our time is
the median of --repeat runs of layout() on the networkx graph (DOT parsing excluded); dot's is the
wall time of one ``dot -Tplain`` process (its own parsing and output included, ~0.1 s of it).

Run: python bench/bench_layout.py [--repeat N] [--dot-timeout S], with gradviz installed
(pip install -e .: the engine is a package of its own in the checkout).
"""
import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import networkx as nx
import numpy as np

import gradviz
import gradviz.engine as torch
from gradviz.layout.layered import count_crossings, layout
from gradviz.trace.dot import read_dot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRANSFORMER = os.path.join(REPO, "..", "shared", "data", "transformer60-autograd.dot")
FAST_DOT = ["-Gnslimit=1", "-Gnslimit1=1", "-Gmclimit=0.1", "-Gremincross=false", "-Gsplines=false"]


def random_dag(n=5000, m=10000, seed=0):
    """Edges from a lower to a higher random topological index. Spans imitate transformer60's
    edges in topological order (78% span 1, 5% span >= 10, longest 58): 95% of spans are
    geometric (p = 0.5: 1, 2, 3... halving), 5% are long, uniform in 10..100."""
    rng = np.random.default_rng(seed)
    names = rng.permutation(n)
    edges = set()
    while len(edges) < m:
        k = m - len(edges)
        a = rng.integers(0, n - 1, k)
        span = np.where(rng.random(k) < 0.05, rng.integers(10, 101, k), rng.geometric(0.5, k))
        edges.update(zip(a.tolist(), np.minimum(a + span, n - 1).tolist()))
    g = nx.DiGraph()
    g.add_nodes_from(str(v) for v in names.tolist())
    g.add_edges_from((str(names[a]), str(names[b])) for a, b in sorted(edges))
    return g


def unrolled_gru(steps=150, hidden=8, inputs=4, seed=0):
    """A GRU cell unrolled ``steps`` steps: the same 9 weight matrices and biases at every step."""
    torch.manual_seed(seed)

    def param(*shape):
        return (torch.randn(*shape) * 0.3).requires_grad_()

    w = {g: param(inputs, hidden) for g in "zrn"}
    u = {g: param(hidden, hidden) for g in "zrn"}
    b = {g: param(hidden) for g in "zrn"}
    xs = torch.randn(steps, 1, inputs)
    with gradviz.record() as rec:
        h = torch.zeros(1, hidden)
        for t in range(steps):
            x = xs[t]
            z = (x.matmul(w["z"]) + h.matmul(u["z"]) + b["z"]).sigmoid()
            r = (x.matmul(w["r"]) + h.matmul(u["r"]) + b["r"]).sigmoid()
            n = (x.matmul(w["n"]) + (r * h).matmul(u["n"]) + b["n"]).tanh()
            h = (1 - z) * n + z * h
        h.sum().backward()
    return rec.trace.graph


def shared_leaves_program():
    """Issue 12's program: 200 leaves, each used at 12 places along a chain of 1,200 steps."""
    with gradviz.record() as rec:
        xs = [torch.rand(3, requires_grad=True) for _ in range(200)]
        acc = xs[0]
        for i in range(1, 1200):
            acc = (acc * xs[i % 200]).tanh() + xs[(7 * i) % 200]
        acc.sum().backward()
    return rec.trace.graph


def tied_transformer(layers=4, vocab=50, d=16, seq=6, seed=0):
    """A small transformer whose output logits use the input embedding's weight, transposed."""
    torch.manual_seed(seed)

    def param(*shape):
        return (torch.randn(*shape) * 0.2).requires_grad_()

    emb = param(vocab, d)
    blocks = [{k: param(d, d) for k in "qkvo"} | {"f1": param(d, 2 * d), "f2": param(2 * d, d)}
              for _ in range(layers)]
    tokens = torch.randint(0, vocab, (seq,))
    with gradviz.record() as rec:
        x = emb[tokens]
        for blk in blocks:
            q, k, v = x.matmul(blk["q"]), x.matmul(blk["k"]), x.matmul(blk["v"])
            att = (q.matmul(k.t()) * (1.0 / d ** 0.5)).softmax(-1)
            x = x + att.matmul(v).matmul(blk["o"])
            x = x + x.matmul(blk["f1"]).relu().matmul(blk["f2"])
        logits = x.matmul(emb.t())
        logits.log_softmax(-1).sum().backward()
    return rec.trace.graph


def accumulators(g):
    return [v for v, d in g.nodes(data=True) if d.get("kind") == "accumulate_grad"]


def to_dot_text(g):
    return "digraph G {\n" + "".join(f'"{v}";\n' for v in g) + \
        "".join(f'"{u}" -> "{v}";\n' for u, v in g.edges) + "}\n"


_NAME = r'"(?:[^"\\]|\\.)*"|\S+'


def _unquote(s):
    return s[1:-1].replace('\\"', '"') if s.startswith('"') else s


def parse_plain(text):
    """Node centres and edge control points from ``dot -Tplain`` (y up, inches)."""
    pos, paths = {}, {}
    for line in text.splitlines():
        if line.startswith("node "):
            m = re.match(rf"node ({_NAME}) (\S+) (\S+)", line)
            pos[_unquote(m.group(1))] = (float(m.group(2)), float(m.group(3)))
        elif line.startswith("edge "):
            m = re.match(rf"edge ({_NAME}) ({_NAME}) (\d+) (.*)", line)
            k = int(m.group(3))
            nums = [float(t) for t in m.group(4).split()[:2 * k]]
            paths[(_unquote(m.group(1)), _unquote(m.group(2)))] = list(zip(nums[::2], nums[1::2]))
    return pos, paths


def _sample_bezier(ctrl, steps=24):
    """Points along a piecewise cubic Bezier (p0, then 3 control points per piece)."""
    ctrl = np.asarray(ctrl, dtype=float)
    if len(ctrl) < 4 or (len(ctrl) - 1) % 3:
        return ctrl
    t = np.linspace(0.0, 1.0, steps)[:, None]
    out = [ctrl[:1]]
    for i in range(0, len(ctrl) - 1, 3):
        p0, p1, p2, p3 = ctrl[i:i + 4]
        u = 1 - t
        out.append(u ** 3 * p0 + 3 * u * u * t * p1 + 3 * u * t * t * p2 + t ** 3 * p3)
    return np.concatenate(out)


def _x_at(poly, y):
    """x where the polyline first reaches height y (None if it never does)."""
    for (x0, y0), (x1, y1) in zip(poly[:-1], poly[1:]):
        if min(y0, y1) <= y <= max(y0, y1):
            return x0 if y1 == y0 else x0 + (x1 - x0) * (y - y0) / (y1 - y0)
    return None


def dot_crossings(g, plain):
    """Crossings of dot's drawing, counted like ours (see the module docstring)."""
    pos, paths = parse_plain(plain)
    ys = sorted({round(y, 3) for _, y in pos.values()}, reverse=True)
    rank_of = {y: r for r, y in enumerate(ys)}
    layers = {v: rank_of[round(pos[v][1], 3)] for v in g}
    xs = {v: pos[v][0] for v in g}
    edge_xs = {}
    for u, v in g.edges:
        lu, lv = layers[u], layers[v]
        if abs(lv - lu) < 2 or (u, v) not in paths:
            continue
        poly = _sample_bezier(paths[(u, v)])
        step = 1 if lv > lu else -1
        edge_xs[(u, v)] = [_x_at(poly, ys[r]) for r in range(lu + step, lv, step)]
        if any(x is None for x in edge_xs[(u, v)]):
            del edge_xs[(u, v)]  # falls back to the straight line between the ends
    crossings = count_crossings(g, layers, xs, edge_xs)
    dummies = sum(abs(layers[v] - layers[u]) - 1 for u, v in g.edges)
    return crossings, len(ys), dummies


def run_dot(dot_text, flags, timeout):
    with tempfile.NamedTemporaryFile("w", suffix=".dot", delete=False) as f:
        f.write(dot_text)
        path = f.name
    try:
        t0 = time.perf_counter()
        out = subprocess.run(["dot", "-Tplain", *flags, path], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
        return time.perf_counter() - t0, out
    finally:
        os.unlink(path)


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, numpy {np.__version__}, "
            f"networkx {nx.__version__}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dot-timeout", type=float, default=60.0)
    args = parser.parse_args()
    have_dot = shutil.which("dot") is not None
    dot_version = ""
    if have_dot:
        dot_version = subprocess.run(["dot", "-V"], capture_output=True, text=True).stderr.strip()
    print("machine:", machine())
    print("graphviz:", dot_version or "dot not installed")

    cases = []
    if os.path.exists(TRANSFORMER):
        with open(TRANSFORMER) as f:
            text = f.read()
        cases.append(("(a) transformer60", read_dot(text), text, [], 0.5, True, None))
    else:
        print(f"(a) skipped: {TRANSFORMER} not found")
    g = random_dag()
    cases.append(("(b) random DAG 5000/10000", g, to_dot_text(g), FAST_DOT, 1.0, False, None))
    for name, make in (("(c) GRU unrolled 150 steps", unrolled_gru),
                       ("(d) 200 leaves x 12 uses (issue 12)", shared_leaves_program),
                       ("(e) transformer, tied embeddings", tied_transformer)):
        g = make()
        cases.append((name, g, to_dot_text(g), [], 1.0, True, accumulators(g)))

    for name, graph, text, flags, target, compare_crossings, shareable in cases:
        print(f"\n{name}: {graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges")
        layout(graph, shareable=shareable)  # warm-up (imports, caches)
        times, result = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = layout(graph, shareable=shareable)
            times.append(time.perf_counter() - t0)
        ours = statistics.median(times)
        st = result.stats
        label = "gradviz " if shareable is None else "stand-ins"
        print(f"  {label:9s}: {ours:8.3f} s (median of {args.repeat})"
              f"  crossings {result.crossings:7d}"
              f"  layers {st['layers']:5d}  bend points {st['dummies']:6d}"
              + (f"  stand-ins {st['standins']} for {st['shared']} nodes" if shareable is not None else ""))
        print("             phases: " + ", ".join(f"{k} {st[k]:.3f}" for k in (
            "sharing", "layering", "proper_graph", "initial_order", "crossing_reduction", "x", "output")))
        if shareable is not None:
            t0 = time.perf_counter()
            plain = layout(graph)
            plain_time = time.perf_counter() - t0
            ps = plain.stats
            print(f"  {'without':9s}: {plain_time:8.3f} s (1 run){'':9s}crossings {plain.crossings:7d}"
                  f"  layers {ps['layers']:5d}  bend points {ps['dummies']:6d}"
                  f"  edges drawn straight {ps['straight']}")
        dot_cross = None
        if not have_dot:
            print("  dot      : dot not installed")
        else:
            try:
                dot_time, plain_text = run_dot(text, flags, args.dot_timeout)
                dot_cross, ranks, dummies = dot_crossings(graph, plain_text)
                print(f"  {'dot':9s}: {dot_time:8.3f} s (1 run){'':9s}crossings {dot_cross:7d}"
                      f"  layers {ranks:5d}  bend points {dummies:6d}"
                      f"  {' '.join(flags) or '(default settings)'}")
                cross_ratio = (f"{result.crossings / dot_cross:.2f}" if dot_cross
                               else f"{result.crossings}/0")
                print(f"  ratio    : dot/gradviz time {dot_time / ours:.1f}x,"
                      f"  gradviz/dot crossings {cross_ratio}")
            except subprocess.TimeoutExpired:
                print(f"  {'dot':9s}: timed out after {args.dot_timeout:.0f} s (no drawing)")
        verdict = "ok" if ours < target else "MISS"
        print(f"  target   : time < {target} s: {verdict} ({ours:.3f} s, {ours / target:.0%} of it)")
        if compare_crossings:
            if dot_cross is None:
                print("  target   : crossings <= dot: n/a (no dot result)")
            else:
                verdict = "ok" if result.crossings <= dot_cross else "MISS"
                print(f"  target   : crossings <= dot: {verdict}"
                      f" ({result.crossings} vs {dot_cross})")


if __name__ == "__main__":
    main()
