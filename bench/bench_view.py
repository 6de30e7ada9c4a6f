"""The graph view's frame times, offscreen: build the items, recolour after a step, repaint the whole
graph zoomed out, at 0.3 and at 1:1, and pan, on (a) resnet18's training-step graph (engine) and
(b) the 60-layer transformer's autograd graph from ../shared/data (5,279 nodes). Smooth means a
repaint well under 16 ms (60 frames a second). Run: python bench/bench_view.py"""
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                    "transformer60-autograd.dot")


def resnet_state():
    import gradviz
    import gradviz.engine as torch
    from gradviz.app.state import AppState
    from gradviz.engine.models import resnet18
    with gradviz.record(values="summaries") as rec:
        torch.manual_seed(0)
        model = resnet18(weights=None)
        torch.nn.functional.cross_entropy(model(torch.rand(1, 3, 64, 64)), torch.tensor([3])).backward()
    st = AppState(trace=rec.trace)
    st.wait_layout()
    return st


def transformer_state():
    """The DOT graph dressed as the parts of AppState the view reads."""
    from gradviz.app.labels import node_size
    from gradviz.trace.dot import read_dot
    from gradviz.app.graphmodel import GraphModel
    from gradviz.layout.layered import layout
    from gradviz.trace.model import Trace
    with open(DATA) as f:
        g = read_dot(f.read())
    for _, d in g.nodes(data=True):
        label = d.get("label") or ""
        d.update(op=label, kind="grad_fn" if "Backward" in label else
                 "accumulate_grad" if label == "AccumulateGrad" else "parameter", scope="", name=None)

    class State:
        trace, graph, current, selected, iteration, pause, time = Trace(), g, None, None, 0, None, None
        labels = {k: d.get("label") or k for k, d in g.nodes(data=True)}

        def ran(self):
            return set()

        def select(self, key):
            self.selected = key
    st = State()
    st.layout = layout(g, node_size=lambda k: node_size(st.labels[k]))
    st.graph_model = GraphModel(st)
    return st


def measure(name, st, app):
    from gradviz.ui.graph_view import GraphView
    v = GraphView(st)
    v.resize(1200, 800)
    v.show()
    app.processEvents()

    def timed(fn, n=7):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e3

    build = timed(v.rebuild, 3)
    refresh = timed(v.refresh)
    v.fit()
    app.processEvents()
    whole = timed(v.viewport().repaint)
    v.resetTransform()
    v.centerOn(next(iter(v.items_by_key.values())).rect.center())
    v.scale(0.3, 0.3)
    app.processEvents()
    mid = timed(v.viewport().repaint)
    v.resetTransform()
    app.processEvents()
    one = timed(v.viewport().repaint)
    bar = v.verticalScrollBar()

    def pan():
        bar.setValue(bar.value() + 40)
        app.processEvents()
        v.viewport().repaint()
    panned = timed(pan, 15)
    print(f"{name:<30} {len(v.items_by_key):>6} {build:>9.0f} {refresh:>9.1f} {whole:>9.1f} {mid:>9.1f} "
          f"{one:>9.1f} {panned:>9.1f}")
    v.close()


def main():
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication(sys.argv[:1])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
          f"QT_QPA_PLATFORM={os.environ['QT_QPA_PLATFORM']}")
    print(f"{'graph (ms)':<30} {'nodes':>6} {'build':>9} {'recolour':>9} {'whole':>9} {'zoom 0.3':>9} "
          f"{'1:1':>9} {'pan 40px':>9}")
    measure("resnet18 training step", resnet_state(), app)
    if os.path.exists(DATA):
        measure("transformer60 (5,279 nodes)", transformer_state(), app)
    else:
        print(f"(no {DATA}: transformer skipped)")


if __name__ == "__main__":
    main()
