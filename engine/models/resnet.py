"""torchvision's ResNet-18, same modules, parameter names and initialisation, randomly initialised."""
import enum
import errno
import os

import numpy as np

from .. import nn
from .._functional import flatten


class ResNet18_Weights(enum.Enum):
    """Named like torchvision's, so that its import works; gradviz cannot download them."""

    IMAGENET1K_V1 = "IMAGENET1K_V1"
    DEFAULT = "IMAGENET1K_V1"


def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups, bias=False,
                     dilation=dilation)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None):
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ``ResNet`` (its constructor arguments included), for ``BasicBlock``."""

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False, groups=1, width_per_group=64,
                 replace_stride_with_dilation=None, norm_layer=None):
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None "
                             f"or a 3-element tuple, got {replace_stride_with_dilation}")
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       norm_layer(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation,
                        norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                         dilation=self.dilation, norm_layer=norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = flatten(self.avgpool(x), 1)
        return self.fc(x)


def save_weights(model, path):
    """Write a model's state dict as a numpy ``.npz`` file (plain arrays: loading it runs no code)."""
    np.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})


def load_weights(path):
    """Read a state dict written by ``save_weights`` (or by ``np.savez`` from any framework)."""
    with np.load(path, allow_pickle=False) as f:
        from .._factory import from_numpy
        return {k: from_numpy(f[k].copy()) for k in f.files}


def _is_weights_name(weights):
    if isinstance(weights, ResNet18_Weights):
        return True
    if isinstance(weights, str):
        name = weights.split(".")[-1] if weights.startswith("ResNet18_Weights.") else weights
        return name in ResNet18_Weights.__members__
    return False


def resnet18(weights=None, progress=True, num_classes=1000, pretrained=False, **kwargs):
    """ResNet-18, as ``torchvision.models.resnet18``; ``kwargs`` go to ``ResNet`` (``zero_init_residual``,
    ``norm_layer``, ...). ``weights`` may be the path of a local ``.npz`` state dict; named pretrained weights
    (``ResNet18_Weights.DEFAULT``, ``"IMAGENET1K_V1"``, ``pretrained=True``) cannot be downloaded here."""
    if pretrained and weights is None:
        weights = ResNet18_Weights.DEFAULT
    if _is_weights_name(weights) and not (isinstance(weights, str) and os.path.exists(weights)):
        raise RuntimeError(
            f"gradviz.engine.models cannot download pretrained weights ({weights!s}): there is no model hub. "
            "Pass weights=PATH to a local .npz state dict instead (write one with "
            "gradviz.engine.models.save_weights(model, PATH), or with numpy.savez from a torchvision state dict), "
            "or weights=None for random initialisation.")
    path = None
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f"weights should be None, a ResNet18_Weights member or the path of a local .npz state "
                            f"dict, got {type(weights).__name__}")
        path = os.fspath(weights)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such weights file (write one with "
                                    "gradviz.engine.models.save_weights(model, PATH))", path)
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)
    if path is not None:
        model.load_state_dict(load_weights(path))
    return model
