"""The wrong-backward demo in plain PyTorch (needs torch): ``torch.autograd.Function``s written by
hand, one of whose backward is subtly wrong: ``ScaledMul`` forgets ``ctx.scale`` in the gradient of
its second input. ``gradviz check --demo torch-wrong-backward`` finds it among the correct ones."""
import torch


class Square(torch.autograd.Function):
    """x ** 2, written by hand (correct)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class ScaledMul(torch.autograd.Function):
    """scale * a * b, with a wrong backward: b's gradient misses the factor scale."""

    @staticmethod
    def forward(ctx, a, b, scale):
        ctx.save_for_backward(a, b)
        ctx.scale = scale
        return scale * a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return ctx.scale * grad * b, grad * a, None  # should be ctx.scale * grad * a


def main():
    torch.manual_seed(0)
    x = torch.randn(4, 3)
    w = torch.randn(3, 5, requires_grad=True)
    gate = torch.randn(4, 5, requires_grad=True)
    h = torch.tanh(x @ w)
    y = ScaledMul.apply(h, Square.apply(gate), 0.5)
    loss = y.sum()
    loss.backward()
    print("loss", loss.item())
    print("|w.grad|", float(w.grad.norm()), "|gate.grad|", float(gate.grad.norm()))
    return loss


if __name__ == "__main__":
    main()
