"""Nodes made by ``autograd.grad(create_graph=True)`` are credited to the grad call that made them
(issue 19, item 5)."""
import pytest

import gradviz

torch = pytest.importorskip("torch")


def test_the_gradients_graph_is_made_at_the_grad_call():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with gradviz.record() as rec:
        y = (x ** 3).sum()
        (g,) = torch.autograd.grad(y, x, create_graph=True)  # GRAD LINE
        z = (g * g).sum()  # USE LINE
        z.backward()
    with open(__file__) as f:
        lines = f.read().splitlines()
    grad_line = next(i for i, s in enumerate(lines, 1) if s.endswith("# GRAD LINE"))
    use_line = next(i for i, s in enumerate(lines, 1) if s.endswith("# USE LINE"))
    nodes = rec.trace.nodes.values()
    by_line = {n.source.line for n in nodes if n.kind == "grad_fn" and n.source and n.source.file == __file__}
    assert grad_line in by_line
    made_at_use = [n.op for n in nodes if n.kind == "grad_fn" and n.source and n.source.line == use_line]
    assert made_at_use == ["MulBackward0", "SumBackward0"]  # the use's own ops, nothing more
    assert x.grad is not None and torch.allclose(x.grad, 2 * (3 * x.detach() ** 2) * 6 * x.detach())
