"""The per-node gradient check: ``Debugger.check_node`` / ``check_pass`` and ``gradviz check``."""
import json
import os
import textwrap

import numpy as np
import pytest

import gradviz
import gradviz.engine as gt
from gradviz import Debugger
from gradviz.adapters.engine import EngineAdapter
from gradviz.adapters.protocol import NotCheckable
from gradviz.debug.check import NodeCheck, check_replay
from gradviz.debug.debugger import DebuggerError
from gradviz.engine import hooks
from gradviz.engine.autograd import Function

ACCUMULATE = ("AccumulateGrad", "torch::autograd::AccumulateGrad")
WRONG_DEMO = os.path.join(os.path.dirname(gradviz.__file__), "demos", "wrong_backward.py")


def _line(path, needle):
    with open(path) as f:
        return next(i for i, line in enumerate(f, 1) if needle in line)


def _pass_checks(tmp_path=None, **launch):
    with Debugger.launch(stop_on_entry=True, **launch) as dbg:
        assert dbg.wait_paused(timeout=30).reason == "entry"
        checks = dbg.check_pass(timeout=300, **_FAST)
        end = dbg.last_pause
        assert end.reason == "checked" and end.detail == "every node of backward pass 0 checked"
        return checks, dict(dbg.checks)


_FAST = {}


def _verdicts(checks):
    return [(c.op, c.ok) for c in checks if c.op not in ACCUMULATE]


# -- the debugger, on the engine -------------------------------------------------------------------
def test_check_pass_finds_the_wrong_backward_and_names_its_input():
    checks, by_node = _pass_checks(demo="wrong-backward")
    assert _verdicts(checks) == [("SumBackward0", True), ("ScaledMul", False), ("Square", True), ("Tanh", True),
                                 ("MmBackward0", True)]
    (bad,) = [c for c in checks if c.ok is False]
    # b's gradient misses the factor scale = 0.5: half of what it should be, at input 1
    assert bad.worst_input == 1 and bad.worst_element is not None
    assert bad.max_rel_error == pytest.approx(0.5, abs=1e-3)
    assert by_node[bad.node] == bad
    acc = [c for c in checks if c.op == "AccumulateGrad"]
    assert len(acc) == 2 and all(c.ok is None and "AccumulateGrad" in c.reason for c in acc)


def test_check_node_at_a_pause_checks_the_paused_node_with_its_grad_outputs():
    with Debugger.launch(demo="wrong-backward", breakpoints=["ScaledMul", "Square"]) as dbg:
        p = dbg.wait_paused(timeout=30)
        assert p.op == "ScaledMul"
        check = dbg.check_node()
        assert check.ok is False and check.node == p.node and check.op == "ScaledMul"
        assert check.worst_input == 1 and not check.random_v
        assert check.directions_checked == check.directions_total == 42  # 40 elements, a dense direction per input
        assert "FAIL" in str(check) and "input 1" in str(check)
        with pytest.raises(DebuggerError, match="checks the paused node"):
            dbg.check_node(node=p.node + 100)
        # the program goes on as it would have: the check ran nothing of the pass
        dbg.resume()
        p2 = dbg.wait_paused(timeout=30)
        assert p2.op == "Square"
        ok = dbg.check_node(eps=1e-5)
        assert ok.ok is True and ok.max_abs_error < 1e-6 and ok.evaluations > 2
        dbg.resume()
        assert dbg.wait_paused(timeout=30).reason == "exited"
        with pytest.raises(DebuggerError):
            dbg.check_node()


@pytest.mark.parametrize("demo", ["seed", "mlp"])
def test_every_node_of_the_seed_and_mlp_demos_passes(demo):
    checks, _ = _pass_checks(demo=demo)
    verdicts = _verdicts(checks)
    assert verdicts and all(ok is True for _, ok in verdicts), [str(c) for c in checks]


def test_every_node_of_an_engine_resnet18_step_passes(tmp_path):
    script = tmp_path / "resnet_step.py"
    script.write_text(textwrap.dedent("""
        import gradviz.engine as torch
        import gradviz.engine.nn.functional as F
        from gradviz.engine.models import resnet18
        torch.manual_seed(0)
        model = resnet18(num_classes=4)
        F.cross_entropy(model(torch.randn(2, 3, 16, 16)), torch.tensor([2, 0])).backward()
    """))
    with Debugger.launch(script=str(script), stop_on_entry=True, values="summaries") as dbg:
        dbg.wait_paused(timeout=30)
        checks = dbg.check_pass(time_budget=0.01, max_evals=8, timeout=300)
    ops = [c.op for c in checks if c.op not in ACCUMULATE]
    assert ops.count("ConvolutionBackward0") == 20 and "NativeBatchNormBackward0" in ops
    bad = [str(c) for c in checks if c.op not in ACCUMULATE and c.ok is not True]
    assert bad == []
    conv = [c for c in checks if c.op == "ConvolutionBackward0"]
    assert all(c.directions_checked < c.directions_total for c in conv)  # a subset of a big input, said


# -- the check itself, in-process ------------------------------------------------------------------
class _Keep:
    """The engine's node_forward hook feeding an EngineAdapter, as the debugger's child does."""

    def __enter__(self):
        self.adapter = EngineAdapter()
        self._h = hooks.node_forward.register(self.adapter.keep_forward)
        return self.adapter

    def __exit__(self, *exc):
        self._h.remove()


def _check(adapter, node, v):
    replay = adapter.replay(node)
    return check_replay(1, type(node).__name__, replay, v, lambda arrays: adapter.vjp(node, v, arrays))


class Cube(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return x ** 3

    def backward(self, grad):
        (x,) = self.saved_tensors
        return (3 * x * x * grad,)


class Noisy(Function):
    def forward(self, x):
        from gradviz.engine import _random
        return x * _random.generator().random(x.shape)

    def backward(self, grad):
        return (grad,)


class Rounds(Function):
    def forward(self, x):
        return np.round(x).astype(np.int64)

    def backward(self, grad):
        return (np.zeros_like(grad),)


class Scale(Function):
    def forward(self, x, c):
        self.c = c
        return x * c

    def backward(self, grad):
        return grad * self.c, None


def test_a_correct_function_passes_and_a_zero_v_is_replaced_by_a_random_one():
    with _Keep() as ad:
        x = gt.tensor([0.5, -1.0, 2.0], requires_grad=True)
        node = Cube.apply(x).grad_fn
        ok = _check(ad, node, [np.array([1.0, 2.0, 3.0])])
        assert ok.ok is True and not ok.random_v and ok.directions_checked == 4  # 3 elements, 1 dense
        zero = _check(ad, node, [np.zeros(3)])
        assert zero.ok is True and zero.random_v  # a zero v passes anything: a random one is used instead


def test_what_cannot_be_checked_says_why():
    from gradviz.engine import _random
    with _Keep() as ad:
        x = gt.tensor([0.5, -1.0, 2.0], requires_grad=True)
        state = _random.generator().bit_generator.state
        noisy = Noisy.apply(x).grad_fn
        with pytest.raises(NotCheckable, match="random"):
            ad.replay(noisy)
        assert _random.generator().bit_generator.state != state  # (the program's own draw, in forward)
        state = _random.generator().bit_generator.state
        with pytest.raises(NotCheckable, match="random"):
            ad.replay(noisy)
        assert _random.generator().bit_generator.state == state  # the check drew nothing of the program's
        with pytest.raises(NotCheckable, match="not differentiable"):
            ad.replay(Rounds.apply(x).grad_fn)
        c = gt.tensor([1.0, 2.0, 3.0])
        scaled = Scale.apply(x, c).grad_fn
        assert _check(ad, scaled, [np.ones(3)]).ok is True
        c.add_(1.0)  # in place, after forward
        with pytest.raises(NotCheckable, match="input 1 was modified in place since forward"):
            ad.replay(scaled)
        leaf = x.sum().grad_fn.next_functions[0][0]
        with pytest.raises(NotCheckable, match="AccumulateGrad"):
            ad.replay(leaf)
    with pytest.raises(NotCheckable, match="not kept"):  # made while nobody kept forward inputs
        EngineAdapter().replay(Cube.apply(x).grad_fn)


def test_a_kink_is_skipped_not_failed():
    with _Keep() as ad:
        x = gt.tensor([0.0, 0.0, 1.0], requires_grad=True)  # ReLU at 0: no derivative there
        node = gt.relu(x).grad_fn
        check = _check(ad, node, [np.ones(3)])
        assert check.ok is True and check.kinks >= 2 and "kinks skipped" in str(check)


def test_node_check_wire_round_trips_and_refuses_bad_fields():
    c = NodeCheck(3, "ScaledMul", False, float("inf"), 0.5, 1, 15, 9, 4, 42, True, None, "f.py:3", 0.01, 2)
    wire = json.loads(json.dumps(c.to_wire()))
    assert NodeCheck.from_wire(wire) == c
    for bad, msg in [({"op": "x"}, "needs"), ({"op": 1, "ok": True}, "'op'"), ({"op": "x", "ok": 1}, "'ok'"),
                     ({"op": "x", "ok": True, "worst_input": "1"}, "worst_input"), ([], "JSON object")]:
        with pytest.raises(ValueError, match=msg):
            NodeCheck.from_wire(bad)


# -- PyTorch ---------------------------------------------------------------------------------------
TORCH_PROGRAM = '''
import torch
import torch.nn.functional as F


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class ScaledMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, scale):
        ctx.save_for_backward(a, b)
        ctx.scale = scale
        return scale * a * b

    @staticmethod
    def backward(ctx, g):  # wrong: b's gradient misses ctx.scale
        a, b = ctx.saved_tensors
        return ctx.scale * g * b, g * a, None


torch.manual_seed(0)
w = torch.randn(3, 5, requires_grad=True)
gate = torch.randn(4, 5, requires_grad=True)
y = ScaledMul.apply(torch.tanh(torch.randn(4, 3) @ w), Square.apply(gate), 0.5)
r = torch.randn(4, 5, requires_grad=True)
z = y.sum() + F.dropout(r, 0.5).sum() + F.linear(y, torch.randn(2, 5, requires_grad=True), torch.randn(2)).sum()
z = z + F.relu(r * 1.0, inplace=True).sum() + torch.sigmoid(r * 2.0).sum()
z = z + torch.relu_(r * 3.0).sum()
z.backward()
'''


def test_torch_custom_function_with_a_wrong_backward_is_caught_and_its_source_named(tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "custom.py"
    script.write_text(TORCH_PROGRAM)
    checks, _ = _pass_checks(script=str(script))
    by_op = {c.op: c for c in checks}
    bad = by_op["ScaledMulBackward"]
    assert bad.ok is False and bad.worst_input == 1
    assert bad.backward_source == f"{script}:{_line(script, 'def backward(ctx, g):  # wrong')}"
    assert by_op["SquareBackward"].ok is True and by_op["SquareBackward"].backward_source.startswith(str(script))
    # F.linear's nodes too: checked as the aten calls that made them (aten.t, aten.addmm)
    for op in ("TanhBackward0", "MmBackward0", "SumBackward0", "AddmmBackward0", "TBackward0"):
        assert by_op[op].ok is True, str(by_op[op])
    reasons = {c.op: c.reason for c in checks if c.ok is None}
    assert "random" in reasons["MulBackward0"]  # dropout, without its mask
    # in place (inplace=True, relu_): checked on a copy of the input taken before the call
    assert [c.ok for c in checks if c.op == "ReluBackward0"] == [True, True]
    assert [c.op for c in checks if c.ok is False] == ["ScaledMulBackward"]


def test_every_node_of_a_torch_resnet18_step_passes_or_says_why(tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "torch_resnet_step.py"
    script.write_text(textwrap.dedent("""
        import torch
        import torch.nn.functional as F
        from gradviz.demos.torch_resnet import resnet18
        torch.set_num_threads(1)
        torch.manual_seed(0)
        F.cross_entropy(resnet18(4)(torch.randn(2, 3, 16, 16)), torch.tensor([2, 0])).backward()
    """))
    with Debugger.launch(script=str(script), stop_on_entry=True, values="summaries") as dbg:
        dbg.wait_paused(timeout=60)
        checks = dbg.check_pass(time_budget=0.01, max_evals=8, timeout=300)
    assert [str(c) for c in checks if c.ok is False] == []
    checked = [c.op for c in checks if c.ok]
    assert checked.count("ConvolutionBackward0") == 20 and checked.count("NativeBatchNormBackward0") == 20
    assert checked.count("AddBackward0") == 8
    assert checked.count("ReluBackward0") == 17  # nn.ReLU(inplace=True): checked on a copy of its input
    # the head too: avgpool's mean, the flatten's view, fc (aten.t + aten.addmm), cross_entropy's two nodes
    for op in ("MeanBackward1", "ViewBackward0", "TBackward0", "AddmmBackward0", "LogSoftmaxBackward0",
               "NllLossBackward0", "MaxPool2DWithIndicesBackward0"):
        assert checked.count(op) == 1, op
    assert [str(c) for c in checks if c.ok is None and c.op not in ACCUMULATE] == []


# -- gradviz check ---------------------------------------------------------------------------------
def test_cli_check_prints_a_line_per_node_and_fails_on_the_wrong_backward(capsys):
    from gradviz.cli import main
    assert main(["check", "--demo", "wrong-backward"]) == 1
    out = capsys.readouterr().out.splitlines()
    line = _line(WRONG_DEMO, "y = ScaledMul.apply")
    assert [ln.split(" ", 2)[0] for ln in out[:5]] == ["ok", "FAIL", "ok", "ok", "ok"]
    assert out[1].startswith(f"FAIL n12 ScaledMul  wrong_backward.py:{line}: max abs error ")
    assert "worst at input 1 element" in out[1]
    assert out[5] == ("backward pass 0: 5 nodes: 4 ok, 1 FAIL, 0 not checkable (and 2 AccumulateGrad nodes, "
                      "nothing to check)")
    assert main(["check", "--demo", "mlp", "--pass", "1"]) == 0
    out = capsys.readouterr().out
    assert "backward pass 1: 10 nodes: 10 ok, 0 FAIL" in out


def test_cli_check_refuses_what_it_cannot_run(capsys, tmp_path):
    from gradviz.cli import main
    assert main(["check"]) == 2
    assert "give a SCRIPT" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.py")]) == 2
    assert "no such script" in capsys.readouterr().err
    assert main(["check", "--demo", "seed", "--pass", "3"]) == 2
    assert "no backward pass 3 was checked" in capsys.readouterr().err


# -- the app ---------------------------------------------------------------------------------------
def _wait(cond, timeout=30.0):
    import time
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def test_app_state_marks_the_failing_node_red_and_the_others_passed():
    from gradviz.app.state import AppState
    with Debugger.launch(demo="wrong-backward", break_on_backward=True) as dbg:
        st = AppState(debugger=dbg)
        _wait(lambda: (st.poll(), st.pause is not None)[1])
        first = st.current
        assert st.checks.can_check() and st.checks.view(first).can_check
        assert st.checks.verdict(first) is None and st.checks.view(first).verdict == "none"
        assert st.checks.check_current().ok is True  # SumBackward0, the paused node
        assert st.checks.verdict(first) == "ok" and st.checks.view(first).headline == "gradient check: ok ✓"
        assert st.checks.check_pass() and not st.checks.can_check()
        _wait(lambda: (st.poll(), st.pause is not None and st.pause.reason == "checked")[1])
        _wait(lambda: (st.poll(), st.checks.request is None)[1])
        scaled = next(k for k, d in st.trace.graph.nodes(data=True) if d.get("op") == "ScaledMul")
        assert st.checks.failing() == {scaled}
        assert {st.trace.graph.nodes[k]["op"] for k in st.checks.passing()} == {
            "SumBackward0", "Square", "Tanh", "MmBackward0"}
        view = st.checks.view(scaled)
        assert view.verdict == "fail" and view.lines[0].startswith("worst at input 1, element ")
        with open(WRONG_DEMO) as f:
            lines = f.read().splitlines()
        cls_at = next(i for i, ln in enumerate(lines) if ln.startswith("class ScaledMul"))
        def_at = next(i for i in range(cls_at, len(lines)) if "def backward" in lines[i]) + 1
        assert view.backward_source == f"{WRONG_DEMO}:{def_at}"  # the user's backward, its def line
        assert "checked 5 nodes: 4 ok, 1 FAIL: ScaledMul" in st.status_text()


def test_the_window_checks_from_the_inspector_and_paints_the_failing_node_red(qtbot):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from gradviz.app.state import AppState
    from gradviz.ui.graph_view import CHECK_FAIL
    from gradviz.ui.inspector import CHECK_PASS
    from gradviz.ui.main_window import MainWindow
    dbg = Debugger.launch(demo="wrong-backward", break_on_backward=True)
    w = MainWindow(AppState(debugger=dbg))
    qtbot.addWidget(w)
    w.show()
    try:
        st = w.state
        qtbot.waitUntil(lambda: st.current is not None and bool(w.view.items_by_key), timeout=30000)
        assert "Check this node's backward" in w.inspector.toPlainText()
        assert w.actions_by_name["Check"].isEnabled()
        from PySide6.QtCore import Qt
        w.activateWindow()
        qtbot.waitUntil(w.isActiveWindow, timeout=5000)  # shortcuts act in the active window
        first = st.current
        qtbot.keyClick(w, Qt.Key_K, Qt.ControlModifier)  # Check: the paused node, SumBackward0
        qtbot.waitUntil(lambda: st.checks.node_request is None, timeout=30000)  # (it comes in through the poll)
        assert w.view.items_by_key[first].check == "ok"
        assert "gradient check: ok ✓" in w.inspector.toPlainText()
        from PySide6.QtCore import QUrl
        w.inspector.anchorClicked.emit(QUrl(CHECK_PASS))  # the inspector's "Check every node of this pass"
        qtbot.waitUntil(lambda: st.pause is not None and st.pause.reason == "checked" and st.checks.request is None,
                        timeout=30000)
        (scaled,) = st.checks.failing()
        w.select(scaled)
        text = w.inspector.toPlainText()
        assert "gradient check: FAIL, its backward disagrees with finite differences" in text
        assert "worst at input 1, element" in text and "its backward" in text and "wrong_backward.py:" in text
        item = w.view.items_by_key[scaled]
        assert item.check == "fail"
        image = w.view.grab().toImage()
        below_label = w.view.mapFromScene(item.rect.left() + 6, item.rect.bottom() - 4)  # fill, not text
        assert image.pixelColor(below_label.x(), below_label.y()).name() == CHECK_FAIL.name()
        ok = next(k for k in st.checks.passing())
        assert w.view.items_by_key[ok].check == "ok"
    finally:
        w.timer.stop()
        dbg.close()


def test_cli_check_finds_the_wrong_torch_autograd_function(capsys):
    pytest.importorskip("torch")
    from gradviz.cli import main
    demo = os.path.join(os.path.dirname(gradviz.__file__), "demos", "torch_wrong_backward.py")
    assert main(["check", "--demo", "torch-wrong-backward"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [ln.split(" ", 2)[0] for ln in out[:5]] == ["ok", "FAIL", "ok", "ok", "ok"]
    assert out[1].startswith("FAIL n11 ScaledMulBackward  torch_wrong_backward.py:")
    assert out[1].endswith(f"; its backward is at {demo}:{_line(demo, '# should be ctx.scale') - 2}")


RELEASE_ENGINE = '''
import gc, weakref
import gradviz.engine as torch
a = torch.tensor([2., 3.], requires_grad=True)
h = a * 2.0
kept = weakref.ref(h._np)   # the input of the add: no node saves it
q = (h + 1.0).sum()
del h
gc.collect()
print("before backward:", "alive" if kept() is not None else "freed")
q.backward(retain_graph=True)
gc.collect()
print("after backward:", "alive" if kept() is not None else "freed")
q.backward()
'''

RELEASE_TORCH = RELEASE_ENGINE.replace("import gradviz.engine as torch", "import torch").replace("h._np", "h")


@pytest.mark.parametrize("framework", ["engine", "torch"])
def test_forward_inputs_are_kept_until_the_node_runs_then_let_go(tmp_path, framework):
    if framework == "torch":
        pytest.importorskip("torch")
    script = tmp_path / "release.py"
    script.write_text(RELEASE_ENGINE if framework == "engine" else RELEASE_TORCH)
    with Debugger.launch(script=str(script), stop_on_entry=True, values="summaries") as dbg:
        dbg.wait_paused(timeout=60)
        first = dbg.check_pass(0, timeout=120)
        assert [c.ok for c in first if c.op not in ACCUMULATE] == [True, True, True]  # Sum, Add, Mul
        # pass 1 runs through the same graph (retain_graph=True), whose nodes have run: their
        # inputs were let go, and it says so
        second = dbg.check_pass(1, timeout=120)
        dbg.resume()
        assert dbg.wait_paused(timeout=60).reason == "exited"
        out = "".join(text for stream, text in dbg.output if stream == "stdout")
    assert [c.ok for c in second if c.op not in ACCUMULATE] == [None, None, None]
    assert all("let go when it ran in backward" in c.reason for c in second if c.op not in ACCUMULATE)
    assert "before backward: alive" in out and "after backward: freed" in out
