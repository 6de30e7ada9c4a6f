"""``gradviz.engine.models``: the architectures the tutorials use, like ``torchvision.models``."""
from .resnet import BasicBlock, ResNet, ResNet18_Weights, load_weights, resnet18, save_weights

__all__ = ["ResNet", "BasicBlock", "ResNet18_Weights", "resnet18", "load_weights", "save_weights"]
