"""The graph is built anew by every forward pass, so Python control flow just works: here the depth
and the activation change from one iteration to the next, and so does the graph."""
import gradviz.engine as torch


def main(iterations=4):
    torch.manual_seed(0)
    w = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(2, 4)
    depths = []
    for it in range(iterations):
        h = x
        depth = it % 3 + 1
        for _ in range(depth):
            h = h @ w
            h = h.tanh() if it % 2 == 0 else h.relu()
        loss = (h ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= 0.1 * w.grad
        w.grad = None
        depths.append(depth)
        print(f"iteration {it}: depth {depth}, loss {loss.item():.4f}")
    return depths


if __name__ == "__main__":
    main()
