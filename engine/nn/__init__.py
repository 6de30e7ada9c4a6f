"""``gradviz.engine.nn``: modules, layers, losses, ``functional``, ``init`` and ``utils``."""
from . import functional, init, utils
from .layers import (AdaptiveAvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, CrossEntropyLoss, Dropout, Flatten,
                     Identity, Linear, LogSoftmax, MaxPool2d, ModuleList, MSELoss, NLLLoss, ReLU, Sequential, Sigmoid,
                     Softmax, Tanh)
from .module import Module
from .parameter import Parameter
from .sequence import GELU, Embedding, GRUCell, LayerNorm, LSTMCell, RNNCell

__all__ = ["Module", "Parameter", "functional", "init", "utils", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d",
           "Conv2d", "CrossEntropyLoss", "Dropout", "Flatten", "Identity", "Linear", "LogSoftmax", "MaxPool2d",
           "ModuleList", "MSELoss", "NLLLoss", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "Embedding",
           "LayerNorm", "GELU", "RNNCell", "GRUCell", "LSTMCell"]
