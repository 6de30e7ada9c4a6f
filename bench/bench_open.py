"""Opening a large recording, as a user does with ``gradviz open run.gvz``: the time from the file
to the first drawn frame of the window (offscreen), on
(a) issue 12's program: 200 leaves, each used at 12 places along a chain of 1,200 steps (~4,000
    nodes, recorded with gradviz.engine);
(b) a GRU cell unrolled 150 steps (the same weights at every step);
(c) a 5,000-node engine program: the transformer of bench_layout, 190 blocks, with tied input and
    output embeddings;
(d) the 60-layer transformer's autograd graph from ../shared/data (a torchviz DOT file, 5,279 nodes).
Each case runs in a fresh process: "first frame" is load + layout + scene + one paint of the whole
window, timed inside it after the imports; "command" is the wall time of the whole
``gradviz open FILE --screenshot PNG`` process (Python's start and the imports included).
Targets (issue 12): under 3 s to the first frame, goal 1 s.

Run: python bench/bench_open.py [--repeat N]
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                    "transformer60-autograd.dot")

PROGRAMS = {
    "(a) issue 12's program": """
        import gradviz.engine as torch
        xs = [torch.rand(3, requires_grad=True) for _ in range(200)]
        acc = xs[0]
        for i in range(1, 1200):
            acc = (acc * xs[i % 200]).tanh() + xs[(7 * i) % 200]
        acc.sum().backward()
    """,
    "(b) GRU, 150 steps": """
        import gradviz.engine as torch
        torch.manual_seed(0)
        H, I = 8, 4
        w = {g: (torch.randn(I, H) * 0.3).requires_grad_() for g in "zrn"}
        u = {g: (torch.randn(H, H) * 0.3).requires_grad_() for g in "zrn"}
        b = {g: (torch.randn(H) * 0.3).requires_grad_() for g in "zrn"}
        h = torch.zeros(1, H)
        for t in range(150):
            x = torch.randn(1, I)
            z = (x.matmul(w["z"]) + h.matmul(u["z"]) + b["z"]).sigmoid()
            r = (x.matmul(w["r"]) + h.matmul(u["r"]) + b["r"]).sigmoid()
            n = (x.matmul(w["n"]) + (r * h).matmul(u["n"]) + b["n"]).tanh()
            h = (1 - z) * n + z * h
        h.sum().backward()
    """,
    "(c) transformer, 190 blocks, tied embeddings": """
        import gradviz.engine as torch
        torch.manual_seed(0)
        V, D, S = 50, 16, 6
        p = lambda *s: (torch.randn(*s) * 0.2).requires_grad_()
        emb = p(V, D)
        blocks = [{k: p(D, D) for k in "qkvo"} | {"f1": p(D, 2 * D), "f2": p(2 * D, D)} for _ in range(190)]
        x = emb[torch.randint(0, V, (S,))]
        for blk in blocks:
            q, k, v = x.matmul(blk["q"]), x.matmul(blk["k"]), x.matmul(blk["v"])
            att = (q.matmul(k.t()) * (1.0 / D ** 0.5)).softmax(-1)
            x = x + att.matmul(v).matmul(blk["o"])
            x = x + x.matmul(blk["f1"]).relu().matmul(blk["f2"])
        x.matmul(emb.t()).log_softmax(-1).sum().backward()
    """,
}

FIRST_FRAME = """
import sys, time
from PySide6.QtWidgets import QApplication
from gradviz.app.state import AppState
from gradviz.trace.files import load_any
from gradviz.ui.main_window import MainWindow
app = QApplication([])
t0 = time.perf_counter()
st = AppState(trace=load_any(sys.argv[1]))
w = MainWindow(st)
w.show()
while st.laying_out or w.view.model.laying_out or not w.view.items_by_key:
    app.processEvents(); w.poll(); time.sleep(0.002)
w.grab()
print(time.perf_counter() - t0, st.graph.number_of_nodes(), len(w.view.items_by_key))
"""


def first_frame(path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", FIRST_FRAME, path], capture_output=True, text=True, env=env,
                         timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr)
    seconds, nodes, items = out.stdout.split()[-3:]
    return float(seconds), int(nodes), int(items)


def command(path, png):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gradviz", "open", path, "--screenshot", png], check=True,
                   capture_output=True, env=env, timeout=600)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for name, src in PROGRAMS.items():
            prog = os.path.join(tmp, f"p{len(cases)}.py")
            with open(prog, "w") as f:
                f.write(textwrap.dedent(src))
            path = os.path.join(tmp, f"p{len(cases)}.gvz")
            subprocess.run([sys.executable, "-m", "gradviz", "record", "-o", path, prog],
                           check=True, capture_output=True)
            cases.append((name, path))
        if os.path.exists(DATA):
            cases.append(("(d) transformer60 (DOT)", DATA))
        print(f"{'case':46} {'nodes':>6} {'items':>6} {'first frame (median)':>22} {'command':>9}  target")
        for name, path in cases:
            runs = [first_frame(path) for _ in range(args.repeat)]
            t = statistics.median(r[0] for r in runs)
            cmd = command(path, os.path.join(tmp, "shot.png"))
            ok = "ok (goal 1 s)" if t < 1.0 else "ok (< 3 s)" if t < 3.0 else "MISSED (3 s)"
            print(f"{name:46} {runs[0][1]:>6} {runs[0][2]:>6} {t:>20.2f} s {cmd:>7.2f} s  {ok}")


if __name__ == "__main__":
    main()
