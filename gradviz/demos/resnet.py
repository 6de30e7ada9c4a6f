"""The autograd tutorial's fine-tuning: resnet18 with every layer frozen, a new fc with 10 classes,
one training step that updates the classifier only."""
import gradviz.engine as torch
from gradviz.engine import nn, optim
from gradviz.engine.models import resnet18


def main():
    torch.manual_seed(0)
    model = resnet18(weights=None)
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Linear(512, 10)
    optimizer = optim.SGD(model.fc.parameters(), lr=1e-2, momentum=0.9)

    data = torch.rand(1, 3, 64, 64)
    labels = torch.tensor([3])
    prediction = model(data)
    loss = nn.functional.cross_entropy(prediction, labels)
    loss.backward()
    optimizer.step()
    print(f"loss {loss.item():.4f}; trained: {[n for n, p in model.named_parameters() if p.grad is not None]}")
    return model


if __name__ == "__main__":
    main()
