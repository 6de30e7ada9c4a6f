"""An iteration is an optimizer step when the program has an optimizer, a backward pass otherwise
(issue 19, item 4), and the app says which."""
import pytest

import gradviz
from gradviz.app.state import AppState

torch = pytest.importorskip("torch")


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def test_lbfgs_closures_are_one_iteration_with_their_step():
    model = _model()
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=20)

    def closure():
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        return loss

    with gradviz.record() as rec:
        for _ in range(2):
            opt.step(closure)
    t = rec.trace
    assert len(t.steps) == 2 and len(t.passes) > 4
    assert t.iterations == 2
    assert AppState(trace=t).status_text().endswith("an iteration is an optimizer step")


def test_a_gradient_penalty_step_is_one_iteration():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradviz.record() as rec:
        for _ in range(5):
            x = torch.randn(4, 3, requires_grad=True)
            out = model(x).sum()
            (g,) = torch.autograd.grad(out, x, create_graph=True)
            loss = out + g.pow(2).sum()  # a forward after a backward pass, in the same step
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert rec.trace.iterations == 5 and len(rec.trace.passes) == 10


def test_without_an_optimizer_an_iteration_is_a_backward_pass():
    model = _model()
    with gradviz.record() as rec:
        for _ in range(3):
            model(torch.randn(2, 3)).sum().backward()
    assert rec.trace.iterations == 3
    assert AppState(trace=rec.trace).status_text().endswith("an iteration is a backward pass")
