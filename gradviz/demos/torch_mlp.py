"""A small MLP in plain PyTorch learning to separate two noisy blobs: a few training iterations
with SGD, recorded by gradviz like any engine program. Needs torch."""
import torch
from torch import nn


def main(iterations=5):
    torch.manual_seed(0)
    n = 64
    x = torch.cat([torch.randn(n, 2) + 2.0, torch.randn(n, 2) - 2.0])
    y = torch.cat([torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64)])
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for it in range(iterations):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"iteration {it}: loss {loss.item():.4f}")
    return losses


if __name__ == "__main__":
    main()
