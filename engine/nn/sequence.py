"""The layers of sequence models: ``Embedding``, ``LayerNorm``, ``GELU`` and the recurrent cells
(``RNNCell``), with ``torch.nn``'s constructors, parameters, initialisation and graphs."""
import math

from .. import _factory
from . import functional as F, init
from .module import Module
from .parameter import Parameter

__all__ = ["Embedding", "LayerNorm", "GELU", "RNNCell", "GRUCell", "LSTMCell"]


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None):
        super().__init__()
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise NotImplementedError("gradviz.engine's Embedding has no max_norm, scale_grad_by_freq or sparse")
        if padding_idx is not None:
            if padding_idx > 0:
                assert padding_idx < num_embeddings, "Padding_idx must be within num_embeddings"
            elif padding_idx < 0:
                assert padding_idx >= -num_embeddings, "Padding_idx must be within num_embeddings"
                padding_idx = num_embeddings + padding_idx
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse = max_norm, norm_type, False, False
        if _weight is None:
            weight = _factory.empty(num_embeddings, embedding_dim, dtype=dtype, device=device)
            self.weight = Parameter(weight, requires_grad=not _freeze)
            self.reset_parameters()
        else:
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            from ..autograd import no_grad
            with no_grad():
                self.weight[self.padding_idx] = 0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        self.elementwise_affine, self.has_bias = elementwise_affine, bias
        if elementwise_affine:
            self.weight = Parameter(_factory.ones(self.normalized_shape, dtype=dtype, device=device))
            if bias:
                self.bias = Parameter(_factory.zeros(self.normalized_shape, dtype=dtype, device=device))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, " \
               f"bias={self.has_bias}"


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class _RNNCellBase(Module):
    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        gates, kw = num_chunks * hidden_size, {"dtype": dtype, "device": device}
        self.weight_ih = Parameter(_factory.empty(gates, input_size, **kw))
        self.weight_hh = Parameter(_factory.empty(gates, hidden_size, **kw))
        if bias:
            self.bias_ih = Parameter(_factory.empty(gates, **kw))
            self.bias_hh = Parameter(_factory.empty(gates, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def _batched(self, input, hx):
        if input.ndim not in (1, 2):
            raise ValueError(f"{type(self).__name__}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        if input.ndim == 2:
            return input, hx
        return input.unsqueeze(0), (None if hx is None else hx.unsqueeze(0))

    def _zeros(self, input):
        return _factory.zeros(input.shape[0], self.hidden_size, dtype=input.dtype)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        return s + (f", nonlinearity={nonlinearity}" if nonlinearity != "tanh" else "")


class RNNCell(_RNNCellBase):
    """``h' = tanh(W_hh h + b_hh + W_ih x + b_ih)`` (or relu), built as PyTorch's CPU cell builds it."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)

    def forward(self, input, hx=None):
        x, h = self._batched(input, hx)
        h = self._zeros(x) if h is None else h
        pre = F.linear(h, self.weight_hh, self.bias_hh) + F.linear(x, self.weight_ih, self.bias_ih)
        out = pre.tanh() if self.nonlinearity == "tanh" else pre.relu()
        return out if input.ndim == 2 else out.squeeze(0)


class GRUCell(_RNNCellBase):
    """PyTorch's CPU GRU cell, op for op (its in-place steps out of place: the same nodes). Each
    ``unsafe_chunk`` piece is its own UnsafeSplitBackward0 here (one node with three outputs in PyTorch)."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input, hx=None):
        x, h = self._batched(input, hx)
        h = self._zeros(x) if h is None else h
        i_r, i_z, i_n = F.linear(x, self.weight_ih, self.bias_ih).unsafe_chunk(3, 1)
        h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).unsafe_chunk(3, 1)
        reset = (h_r + i_r).sigmoid()
        update = (h_z + i_z).sigmoid()
        new = (i_n + h_n * reset).tanh()
        out = (h - new) * update + new
        return out if input.ndim == 2 else out.squeeze(0)


class LSTMCell(_RNNCellBase):
    """PyTorch's CPU LSTM cell, op for op; returns ``(h', c')``. Each ``unsafe_chunk`` piece is its
    own UnsafeSplitBackward0 here (one node with four outputs in PyTorch)."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input, hx=None):
        if hx is not None and input.ndim == 1:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        x, _ = self._batched(input, None)
        h, c = (self._zeros(x), self._zeros(x)) if hx is None else hx
        gates = F.linear(h, self.weight_hh, self.bias_hh) + F.linear(x, self.weight_ih, self.bias_ih)
        i, f, g, o = gates.unsafe_chunk(4, 1)
        ingate, forgetgate, cellgate, outgate = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        cy = forgetgate * c + ingate * cellgate
        hy = outgate * cy.tanh()
        return (hy, cy) if input.ndim == 2 else (hy.squeeze(0), cy.squeeze(0))
