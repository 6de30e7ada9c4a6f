"""A PyTorch composite call's nodes (``F.linear``, ``F.cross_entropy``) checked as the aten calls
that made them (gradviz.adapters.torch.aten_calls)."""

import pytest

from gradviz import Debugger

ACCUMULATE = ("AccumulateGrad", "torch::autograd::AccumulateGrad")

MLP = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class WrongLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w.t() + b

    @staticmethod
    def backward(ctx, g):  # wrong: the weight's gradient is transposed the other way round and halved
        x, w = ctx.saved_tensors
        return g @ w, 0.5 * g.t() @ x, g.sum(0)


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
x = torch.randn(5, 4)
WRONG
loss = F.cross_entropy(model(x), torch.tensor([0, 2, 1, 1, 0]))
loss.backward()
'''


def _checks(tmp_path, wrong):
    script = tmp_path / "mlp.py"
    script.write_text(MLP.replace("WRONG", wrong))
    with Debugger.launch(script=str(script), stop_on_entry=True) as dbg:
        dbg.wait_paused(timeout=60)
        return dbg.check_pass(timeout=300)


def test_every_node_of_a_torch_mlp_passes(tmp_path):
    pytest.importorskip("torch")
    checks = _checks(tmp_path, "")
    refused = [str(c) for c in checks if c.ok is None and c.op not in ACCUMULATE]
    assert refused == [] and [str(c) for c in checks if c.ok is False] == []
    ops = sorted(c.op for c in checks if c.ok)
    assert ops == ["AddmmBackward0", "AddmmBackward0", "LogSoftmaxBackward0", "NllLossBackward0", "ReluBackward0",
                   "TBackward0", "TBackward0"]
    assert len([c for c in checks if c.op in ACCUMULATE]) == 4  # two weights, two biases


def test_a_wrong_custom_linear_among_nn_linears_is_caught(tmp_path):
    pytest.importorskip("torch")
    wrong = "x = torch.relu(WrongLinear.apply(x, torch.randn(4, 4, requires_grad=True), torch.zeros(4)))"
    checks = _checks(tmp_path, wrong)
    (bad,) = [c for c in checks if c.ok is False]
    assert bad.op == "WrongLinearBackward" and bad.worst_input == 1  # the weight
    assert sorted(c.op for c in checks if c.ok) == ["AddmmBackward0", "AddmmBackward0", "LogSoftmaxBackward0",
                                                   "NllLossBackward0", "ReluBackward0", "ReluBackward0",
                                                   "TBackward0", "TBackward0"]


def test_a_node_whose_output_was_written_in_place_inside_the_call_is_not_mapped():
    torch = pytest.importorskip("torch")
    from gradviz.adapters.torch.aten_calls import AtenCalls
    x, w, b = torch.randn(2, 3), torch.randn(4, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    with AtenCalls(torch) as calls:
        y = torch.addmm(b, x, w.t())
        z = torch.addmm(b, x, w.t())
        z.relu_()  # z's grad_fn is now ReluBackward0: addmm did not make it
    mapped = {id(v[0].metadata): (v[0].name(), str(v[1])) for v in calls.nodes().values()}
    assert mapped[id(y.grad_fn.metadata)] == ("AddmmBackward0", "aten.addmm.default")
    assert mapped[id(y.grad_fn.next_functions[2][0].metadata)] == ("TBackward0", "aten.t.default")
    assert z.grad_fn.name() == "ReluBackward0" and id(z.grad_fn.metadata) not in mapped
    assert id(z.grad_fn.next_functions[0][0].metadata) not in mapped  # z's own addmm: its output was written since
    assert len(mapped) == 3


def test_a_torch_compiled_function_is_refused_and_the_pass_goes_on(tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "compiled.py"
    script.write_text(
        "import torch\n"
        "f = torch.compile(lambda a: (a.sin() * 2.0).sum(), backend='aot_eager')\n"
        "x = torch.randn(3, requires_grad=True)\n"
        "(f(x) + x.cos().sum()).backward()\n"
        "print('grad', x.grad.tolist())\n")
    with Debugger.launch(script=str(script), stop_on_entry=True) as dbg:
        dbg.wait_paused(timeout=60)
        checks = dbg.check_pass(timeout=300)
        dbg.resume()
        end = dbg.wait_paused(timeout=60)
    # its backward run once more would free its saved tensors: the program's own backward then fails
    (compiled,) = [c for c in checks if c.op == "CompiledFunctionBackward"]
    assert compiled.ok is None and "torch.compile" in compiled.reason
    assert end.reason == "exited"
    assert [c.op for c in checks if c.ok] == ["AddBackward0", "SumBackward0", "CosBackward0"]


def test_a_list_of_views_is_mapped_to_its_one_node_with_each_output_number():
    torch = pytest.importorskip("torch")
    from gradviz.adapters.torch.aten_calls import AtenCalls
    w = torch.randn(4, 6, requires_grad=True)
    with AtenCalls(torch) as calls:
        a, b = (w * 2).split([2, 4], dim=1)
    (split,) = [v for v in calls.nodes().values() if v[0].name() == "SplitWithSizesBackward0"]
    assert str(split[1]) == "aten.split_with_sizes.default" and split[4] == [(0, 0), (1, 1)]
    assert split[0].metadata is a.grad_fn.metadata is b.grad_fn.metadata


CNN = '''
import torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
loss = F.cross_entropy(model(torch.randn(5, 1, 8, 8)), torch.tensor([0, 1, 2, 0, 1]))
loss.backward()
'''


def test_a_passing_node_reports_a_small_relative_error(tmp_path):
    """A conv's directions whose gradient is ~0 (float32 rounding on both sides) once gave a 185%
    relative error on a node that passed: such directions are judged by atol alone."""
    pytest.importorskip("torch")
    script = tmp_path / "cnn.py"
    script.write_text(CNN)
    with Debugger.launch(script=str(script), stop_on_entry=True) as dbg:
        dbg.wait_paused(timeout=60)
        checks = [c for c in dbg.check_pass(timeout=300) if c.ok is not None]
    assert "ConvolutionBackward0" in [c.op for c in checks] and all(c.ok for c in checks)
    assert max(c.max_rel_error for c in checks) < 1e-3, [str(c) for c in checks]
