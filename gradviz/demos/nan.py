"""Where NaN gradients come from: the distance between two points is sqrt(sum((p - q)**2)), and at
distance zero sqrt's derivative 1/(2*sqrt(0)) is infinite. Forward is fine (the distance is 0);
in backward SqrtBackward0 makes Inf, and PowBackward0 turns Inf * 0 into NaN."""
import gradviz.engine as torch


def main():
    p = torch.tensor([[0., 0.], [1., 1.], [3., 4.]], requires_grad=True)
    q = torch.tensor([[3., 4.], [1., 1.], [0., 0.]])
    loss = torch.tensor(0.)
    for i in range(3):
        dist = ((p[i] - q[i]) ** 2).sum().sqrt()  # at i == 1 the two points coincide
        loss = loss + dist
    loss.backward()
    print("loss =", loss.item(), " p.grad =", p.grad.tolist())
    return p


if __name__ == "__main__":
    main()
