"""A small model with hand-written ``Function``s, one of whose backward is subtly wrong: ``ScaledMul``
forgets the factor ``scale`` in the gradient of its second input. ``gradviz check --demo
wrong-backward`` finds it among the correct ones (``Square``, ``Tanh``, and the engine's own ops)."""
import numpy as np

import gradviz.engine as torch
from gradviz.engine.autograd import Function


class Square(Function):
    """x ** 2, written by hand (correct)."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, grad):
        (x,) = self.saved_tensors
        return (2 * x * grad,)


class Tanh(Function):
    """tanh(x), written by hand (correct): the derivative from the saved output."""

    def forward(self, x):
        y = np.tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved_tensors
        return (grad * (1 - y * y),)


class ScaledMul(Function):
    """scale * a * b, with a wrong backward: b's gradient misses the factor scale."""

    def forward(self, a, b, scale=1.0):
        self.save_for_backward(a, b)
        self.scale = scale
        return scale * a * b

    def backward(self, grad):
        a, b = self.saved_tensors
        return self.scale * grad * b, grad * a  # should be self.scale * grad * a


def main():
    torch.manual_seed(0)
    x = torch.randn(4, 3)
    w = torch.randn(3, 5, requires_grad=True)
    gate = torch.randn(4, 5, requires_grad=True)
    h = Tanh.apply(x @ w)
    y = ScaledMul.apply(h, Square.apply(gate), 0.5)
    loss = y.sum()
    loss.backward()
    print("loss", float(loss.item()))
    print("|w.grad|", float(np.linalg.norm(w.grad.numpy())), "|gate.grad|", float(np.linalg.norm(gate.grad.numpy())))
    return loss


if __name__ == "__main__":
    main()
