"""A pass of ``torch.autograd.grad`` (or ``backward(inputs=...)``) is counted by the nodes the engine
will run, not by every node its roots reach (issue 19, item 3)."""
import pytest

import gradviz
from gradviz.app.state import AppState
from gradviz.trace.files import load

torch = pytest.importorskip("torch")


def _program():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4), torch.nn.Tanh(),
                            torch.nn.Linear(4, 1))
    x = torch.randn(2, 3, requires_grad=True)
    return m, x


@pytest.mark.parametrize("how", ["grad of the input", "grad of the parameters", "backward(inputs=)",
                                 "grad of a hidden layer"])
def test_the_steps_of_a_pass_are_those_the_engine_runs(how, tmp_path):
    m, x = _program()
    with gradviz.record(path=tmp_path / "run.gvz") as rec:
        y = m(x).sum()
        if how == "grad of the input":
            (g,) = torch.autograd.grad(y, x)
        elif how == "grad of the parameters":
            torch.autograd.grad(y, m.parameters())  # an iterator, read once
        elif how == "backward(inputs=)":
            y.backward(inputs=[m[4].weight])
        else:
            h = m[:3](x)
            torch.autograd.grad(m[3:](h).sum(), h)
    for trace in (rec.trace, load(tmp_path / "run.gvz")):
        p = trace.passes[-1]
        reach = len(trace.graph.nodes)  # (more than the pass runs)
        assert sorted(p.planned) == sorted(p.order) and len(p.order) < reach
        k, n = AppState(trace=trace).step_position()
        assert (k, n) == (len(p.order), len(p.order))


def test_a_pass_without_inputs_plans_nothing_and_counts_what_it_reaches():
    m, x = _program()
    with gradviz.record() as rec:
        m(x).sum().backward()
    p = rec.trace.passes[-1]
    assert p.planned is None
    assert AppState(trace=rec.trace).step_position() == (len(p.order), len(p.order))
