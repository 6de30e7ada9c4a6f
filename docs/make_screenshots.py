"""Makes the README's screenshots, offscreen, the way a user sees the app:
the seed demo paused mid-backward; resnet18 (one training step, layer1.1 frozen) with its
gradient plots; the autograd tutorial's resnet18 stepped ten nodes into its backward pass (the
first view of a large graph: its modules as boxes, the paused node's opened, followed at a
readable zoom, the minimap); and a GRU cell unrolled 150 steps, paused mid-backward (its weights
drawn by stand-ins next to each use). Run: QT_QPA_PLATFORM=offscreen python docs/make_screenshots.py [OUT_DIR]"""
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


def wrong_backward(app, out_dir):
    """The wrong-backward demo after "Check every node of this pass": ScaledMul's wrong backward
    red in the graph, its error and its backward's line in the inspector, the others ticked."""
    from gradviz import Debugger
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow

    state = AppState(launch=lambda breakpoints=(), **switches: Debugger.launch(
        demo="wrong-backward", **{"break_on_backward": True, **switches}))
    w = MainWindow(state, "gradviz — wrong_backward.py, every node checked")
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
    w.grab().save(os.path.join(out_dir, "wrong-backward.png"))
    w.close()
    state.close()


def main(out_dir="docs", only=None):
    import tempfile

    from PySide6.QtWidgets import QApplication

    from gradviz import Debugger, record
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    os.makedirs(out_dir, exist_ok=True)
    if only == "wrong-backward":  # (python docs/make_screenshots.py docs wrong-backward: that one alone)
        return wrong_backward(app, out_dir)

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

    wrong_backward(app, out_dir)


if __name__ == "__main__":
    main(*sys.argv[1:])
