"""Makes the README's screenshots, offscreen, the way a user sees the app:
the seed demo paused mid-backward; resnet18 (one training step, layer1.1 frozen) with its
gradient plots; the autograd tutorial's resnet18 stepped ten nodes into its backward pass (the
first view of a large graph: its modules as boxes, the paused node's opened, followed at a
readable zoom, the minimap); and a GRU cell unrolled 150 steps, paused mid-backward (its weights
drawn by stand-ins next to each use); docs/diagnosing.md's NaN origin path and iteration diff;
two ranks of a data-parallel job side by side; and the mlp demo served and attached to (gradviz
serve, gradviz attach).
Run: QT_QPA_PLATFORM=offscreen python docs/make_screenshots.py [OUT_DIR]"""
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

RESNET = """
import gradviz.engine as torch
from gradviz.engine import nn
from gradviz.engine.models import resnet18

torch.manual_seed(0)
model = resnet18(weights=None)
for p in model.layer1[1].parameters():   # frozen, as in the tutorial: greyed in the graph
    p.requires_grad = False
optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2, momentum=0.9)
prediction = model(torch.rand(1, 3, 64, 64))
loss = nn.functional.cross_entropy(prediction, torch.tensor([3]))
loss.backward()
optimizer.step()
"""


TUTORIAL_RESNET = """
import gradviz.engine as torch
from gradviz.engine.models import resnet18

torch.manual_seed(0)
model = resnet18(weights=None)
prediction = model(torch.rand(1, 3, 64, 64))
loss = (prediction - torch.rand(1, 1000)).sum()
loss.backward()
"""

GRU = """
import gradviz
import gradviz.engine as torch

torch.manual_seed(0)
H, I = 8, 4
W = {g: gradviz.name((torch.randn(I + H, H) * 0.3).requires_grad_(), f"W{g}") for g in "zrh"}
h = torch.zeros(1, H)
for t in range(150):
    xh = torch.cat([torch.randn(1, I), h], dim=1)
    z = (xh @ W["z"]).sigmoid()
    r = (xh @ W["r"]).sigmoid()
    hh = (torch.cat([xh[:, :I], r * h], dim=1) @ W["h"]).tanh()
    h = (1 - z) * h + z * hh
h.sum().backward()
"""


def _stepped(app, tmp, name, source, steps, out, title):
    """Run ``source`` under the debugger, pausing before each backward node, step ``steps`` times
    and save the window."""
    from gradviz import Debugger
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow

    script = os.path.join(tmp, name)
    with open(script, "w") as f:
        f.write(source)
    state = AppState(launch=lambda breakpoints=(), **switches: Debugger.launch(
        script, breakpoints=breakpoints, **{"break_on_backward": True, **switches}))
    w = MainWindow(state, title)
    w.resize(1600, 1000)
    w.show()
    w.follow_current()
    _settle(app, w, lambda: state.pause is not None and state.current is not None and not state.laying_out)
    for _ in range(steps):
        before = state.pause
        state.step()
        _settle(app, w, lambda: state.pause is not None and state.pause is not before)
    _settle(app, w, lambda: True)
    w.grab().save(out)
    w.close()
    state.close()


def _settle(app, window, until, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        app.processEvents()
        window.poll()
        time.sleep(0.01)
    for _ in range(5):
        app.processEvents()


def seed_explained(app, out_dir):
    """The seed paused at a**3's PowBackward0: the inspector's local rule with its numbers."""
    from gradviz import Debugger
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow

    state = AppState(launch=lambda breakpoints=(), **switches: Debugger.launch(
        demo="seed", **{"break_on_backward": True, **switches}))
    w = MainWindow(state, "gradviz — seed, backward explained")
    w.resize(1400, 900)
    w.show()
    for i in range(5):
        _settle(app, w, lambda: state.pause is not None and len(state.ran()) == i)
        if i < 4:
            state.step()
    w.view.fit()
    _settle(app, w, lambda: True)
    w.grab().save(os.path.join(out_dir, "seed-explained.png"))
    w.close()
    state.close()


def diagnosis_shots(app, out_dir):
    """docs/diagnosing.md's pictures: the nan demo's NaN traced to its origin (the path drawn, the
    origin selected in the inspector), and the control-flow demo's iterations 0 and 1 as a diff."""
    from gradviz import record
    from gradviz.app.state import AppState
    from gradviz.demos import run
    from gradviz.ui.diff_view import DiffWindow
    from gradviz.ui.main_window import MainWindow

    with record() as rec:
        run("nan")
    state = AppState(trace=rec.trace)
    w = MainWindow(state, "gradviz — nan demo, a NaN traced to its origin")
    w.resize(1400, 900)
    w.show()
    _settle(app, w, lambda: state.layout is not None and not state.laying_out)
    p = next(k for k, d in state.graph.nodes(data=True) if d.get("name") == "p")
    w.trace_origin("nan", p)
    w.select(state.diagnosis.path_keys()[0])
    w.view.fit()
    _settle(app, w, lambda: True)
    w.grab().save(os.path.join(out_dir, "nan-origin.png"))
    w.close()

    with record() as rec:
        run("control-flow")
    d = DiffWindow(rec.trace, 0, 1)
    d.setWindowTitle("gradviz — control-flow demo, iteration 0 against 1")
    d.resize(900, 760)
    d.show()
    for _ in range(5):
        app.processEvents()
    d.view.fit()
    for _ in range(5):
        app.processEvents()
    d.grab().save(os.path.join(out_dir, "diff.png"))
    d.close()

def ranks_side_by_side(app, out_dir):
    """A 2-rank DistributedDataParallel job on gloo (gradviz/demos/torch_ddp.py, rank 1's last batch
    holding a NaN), recorded rank by rank, iteration 1 compared and opened together: the Ranks dock (rank selector, each
    parameter's local gradient per rank beside the synchronised one, the bucket all-reduces, all
    ranks' gradient flow) beside rank 0's graph. Skipped without torch's gloo backend."""
    import subprocess
    import tempfile
    try:
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_gloo_available()):
            raise ImportError
    except ImportError:
        print("ranks.png: skipped (needs torch with the gloo backend)", file=sys.stderr)
        return
    from PySide6.QtCore import Qt

    from gradviz.app.ranks import RankState
    from gradviz.app.state import AppState
    from gradviz.debug.job import free_port, record_command, start_ranks
    from gradviz.demos import torch_ddp
    from gradviz.trace.ranks import load_ranks
    from gradviz.ui.main_window import MainWindow
    from gradviz.ui.rank_view import add_rank_view

    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run.gvz")
        ranks = start_ranks(lambda r: record_command(run, script=torch_ddp.__file__, args=["--nan-rank", "1"]),
                            range(2), 2, free_port(), cwd=tmp, stdout=subprocess.DEVNULL,
                            extra_env={"OMP_NUM_THREADS": "1"})
        if ranks.wait(timeout=300) != {0: 0, 1: 0}:
            raise RuntimeError("the 2-rank job failed")
        job = RankState(load_ranks(run))
    state = AppState(trace=job.trace)
    w = MainWindow(state, "gradviz — run.gvz")
    w.resize(1500, 900)
    view = add_rank_view(w, job)
    view.iteration.setCurrentIndex(1)  # iteration 1: both ranks' gradients; rank 1's NaN comes in iteration 2
    w.show()
    w.resizeDocks([view.parentWidget()], [620], Qt.Horizontal)
    _settle(app, w, lambda: state.layout is not None and not state.laying_out)
    w.view.fit()
    _settle(app, w, lambda: True)
    w.grab().save(os.path.join(out_dir, "ranks.png"))
    w.close()


def remote_attached(app, out_dir):
    """The mlp demo served (gradviz serve) and attached to (gradviz attach), a few nodes into its
    backward pass: the status line says where the program runs."""
    from gradviz import Debugger
    from gradviz.app.state import AppState
    from gradviz.debug.relay import Relay
    from gradviz.ui.main_window import MainWindow

    relay = Relay.start(demo="mlp")
    try:
        relay.listen("127.0.0.1", 0)
        dbg = Debugger.attach(relay.address, secret=relay.secret, stop_on_entry=False, break_on_backward=True)
        state = AppState(debugger=dbg)
        w = MainWindow(state, f"gradviz — attached to {relay.address}")
        w.resize(1400, 900)
        w.show()
        for i in range(4):
            _settle(app, w, lambda: state.pause is not None and len(state.ran()) == i and not state.laying_out)
            if i < 3:
                state.step()
        _settle(app, w, lambda: True)
        w.grab().save(os.path.join(out_dir, "remote-attach.png"))
        w.close()
        dbg.terminate()
        state.close()
    finally:
        relay.close()


def _checked(app, out_path, title, **launch):
    """A program after "Check every node of this pass", its first failing node selected (its error
    and its backward's line in the inspector), the others ticked."""
    from gradviz import Debugger
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow

    state = AppState(launch=lambda breakpoints=(), **switches: Debugger.launch(
        **launch, **{"break_on_backward": True, **switches}))
    w = MainWindow(state, title)
    w.resize(1400, 900)
    w.show()
    _settle(app, w, lambda: state.pause is not None and state.current is not None and not state.laying_out)
    w.check_pass()
    _settle(app, w, lambda: state.pause is not None and state.pause.reason == "checked"
            and state.checks.request is None)
    failing = sorted(state.checks.failing())
    w.view.fit()
    if failing:
        w.select(failing[0])
    _settle(app, w, lambda: True)
    w.grab().save(out_path)
    w.close()
    state.close()


def wrong_backward(app, out_dir):
    """The wrong-backward demo checked: ScaledMul's wrong backward red in the graph."""
    _checked(app, os.path.join(out_dir, "wrong-backward.png"), "gradviz — wrong_backward.py, every node checked",
             demo="wrong-backward")


TORCH_MLP_WRONG = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class WrongLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w.t() + b

    @staticmethod
    def backward(ctx, g):  # wrong: the weight's gradient halved
        x, w = ctx.saved_tensors
        return g @ w, 0.5 * g.t() @ x, g.sum(0)


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
x = torch.relu(WrongLinear.apply(torch.randn(5, 4), torch.randn(6, 4, requires_grad=True), torch.zeros(6)))
loss = F.cross_entropy(model(x), torch.tensor([0, 2, 1, 1, 0]))
loss.backward()
"""


def torch_mlp_checked(app, out_dir):
    """A PyTorch MLP checked: nn.Linear's TBackward0 and AddmmBackward0 and cross_entropy's two
    nodes ticked (checked as their aten calls), a wrong custom Function red."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "torch_mlp.py")
        with open(script, "w") as f:
            f.write(TORCH_MLP_WRONG)
        _checked(app, os.path.join(out_dir, "torch-mlp-checked.png"), "gradviz — torch_mlp.py, every node checked",
                 script=script)


def forgotten_iterations(app, out_dir):
    """A long run past its event budget (docs/recording.md): the forgotten iterations grey on the
    timeline, which stops at the first kept moment when dragged there, and says why."""
    import contextlib
    import io

    import gradviz
    import gradviz.engine as torch
    from gradviz.app.state import AppState
    from gradviz.trace.model import Trace
    from gradviz.ui.main_window import MainWindow

    with contextlib.redirect_stdout(io.StringIO()), gradviz.record() as rec:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(120):
            loss = model(torch.randn(16, 4)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    trace = Trace(event_budget=len(rec.trace.events) // 3)
    trace.extend(rec.trace.events)
    state = AppState(trace=trace)
    w = MainWindow(state, "gradviz — a long run past its event budget")
    w.resize(1400, 800)
    w.show()
    _settle(app, w, lambda: True)
    w.timeline_bar.set_position(10)  # dragged into the forgotten iterations
    _settle(app, w, lambda: True)
    w.grab().save(os.path.join(out_dir, "forgotten-iterations.png"))
    w.close()


def main(out_dir="docs", only=None):
    import tempfile

    from PySide6.QtWidgets import QApplication

    from gradviz import Debugger, record
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    os.makedirs(out_dir, exist_ok=True)
    if only is not None:  # python docs/make_screenshots.py docs NAME: that picture alone
        shots = {"seed-explained": seed_explained, "remote": remote_attached, "diagnosis": diagnosis_shots,
                 "ranks": ranks_side_by_side, "wrong-backward": wrong_backward,
                 "torch-mlp-checked": torch_mlp_checked, "forgotten": forgotten_iterations}
        if only not in shots:
            raise SystemExit(f"make_screenshots: no picture {only!r}; one of {', '.join(shots)}")
        return shots[only](app, out_dir)

    # 1. The seed demo, three nodes into its backward pass.
    state = AppState(launch=lambda breakpoints=(), **switches: Debugger.launch(
        demo="seed", **{"break_on_backward": True, **switches}))
    w = MainWindow(state, "gradviz — seed")
    w.show()
    for i in range(4):
        _settle(app, w, lambda: state.pause is not None and len(state.ran()) == i)
        if i < 3:
            state.step()
    w.view.fit()
    _settle(app, w, lambda: True)
    w.grab().save(os.path.join(out_dir, "seed-mid-backward.png"))
    w.close()
    state.close()

    seed_explained(app, out_dir)
    remote_attached(app, out_dir)
    forgotten_iterations(app, out_dir)

    # 2. resnet18: one training step recorded, modules collapsed, the gradient flow shown.
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "resnet_step.py")
        with open(script, "w") as f:
            f.write(RESNET)
        with record() as rec:
            exec(compile(RESNET, script, "exec"), {"__name__": "__main__"})
    state = AppState(trace=rec.trace)
    w = MainWindow(state, "gradviz — resnet18, one training step")
    w.resize(1600, 1000)
    w.show()
    _settle(app, w, lambda: state.layout is not None and not state.laying_out)
    w.view.set_collapsed(["layer2", "layer3", "layer4"])
    _settle(app, w, lambda: True)
    w.view.find("layer1.0.conv2.weight")  # selects it and centres on it, readable
    w.plot.setCurrentWidget(w.plot.pages["Gradient flow"])
    _settle(app, w, lambda: True)
    w.grab().save(os.path.join(out_dir, "resnet18-gradients.png"))
    w.close()

    # 3, 4. Stepping real-size graphs: the tutorial's resnet18, and an unrolled GRU.
    with tempfile.TemporaryDirectory() as tmp:
        _stepped(app, tmp, "resnet18_tutorial.py", TUTORIAL_RESNET, 10,
                 os.path.join(out_dir, "resnet18-stepping.png"), "gradviz — resnet18_tutorial.py")
        _stepped(app, tmp, "gru.py", GRU, 12, os.path.join(out_dir, "gru-standins.png"), "gradviz — gru.py")

    diagnosis_shots(app, out_dir)
    ranks_side_by_side(app, out_dir)  # 5. two ranks of a data-parallel job
    wrong_backward(app, out_dir)
    torch_mlp_checked(app, out_dir)


if __name__ == "__main__":
    main(*sys.argv[1:])
