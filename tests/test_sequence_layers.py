"""The layers of the usual first models (a GPT, an RNN) against PyTorch (``torch==2.13.0``):
results, gradients and graphs (node names in ``next_functions`` order) as PyTorch's."""
import math

import numpy as np
import pytest

import gradviz.engine as engine
from graph_names import node_names  # noqa: E402

torch = pytest.importorskip("torch")




def _inputs(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _both(arrays):
    return ([torch.tensor(a, requires_grad=True) for a in arrays],
            [engine.tensor(a, requires_grad=True) for a in arrays])


def _check(fn, arrays, rtol=1e-5, atol=1e-6, grad_seed=7, same_graph=True):
    """``fn(lib, *tensors)`` in both libraries: the same output, graph and input gradients (with
    ``same_graph=False``, the same kinds of nodes)."""
    ts, es = _both(arrays)
    out_t, out_e = fn(torch, *ts), fn(engine, *es)
    if same_graph:
        assert node_names(out_e) == node_names(out_t)
    else:
        assert set(node_names(out_e)) == set(node_names(out_t))
    np.testing.assert_allclose(out_e.detach().numpy(), out_t.detach().numpy(), rtol=rtol, atol=atol)
    g = np.random.default_rng(grad_seed).standard_normal(tuple(out_t.shape)).astype(np.float32)
    out_t.backward(torch.tensor(g))
    out_e.backward(engine.tensor(g))
    for t, e in zip(ts, es):
        np.testing.assert_allclose(e.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    x = np.concatenate([np.linspace(-6, 6, 61, dtype=np.float32), _inputs(0, (20,))[0] * 3])
    _check(lambda lib, x: lib.nn.functional.gelu(x * 1, approximate=approximate), [x])
    assert repr(engine.nn.GELU()) == repr(torch.nn.GELU()) and repr(engine.nn.GELU("tanh")) == \
        repr(torch.nn.GELU("tanh"))


def test_erf_matches_math():
    from gradviz.engine.ops.transformer import erf
    xs = np.linspace(-7, 7, 2001)
    np.testing.assert_allclose(erf(xs), [math.erf(v) for v in xs], rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape,normalized", [((4, 6), (6,)), ((2, 3, 8), (8,)), ((2, 3, 4), (3, 4))])
def test_layer_norm(shape, normalized):
    x, w, b = _inputs(1, shape, normalized, normalized)
    _check(lambda lib, x, w, b: lib.nn.functional.layer_norm(x * 2, normalized, w, b), [x, w, b], rtol=1e-4,
           atol=1e-5)
    _check(lambda lib, x: lib.nn.functional.layer_norm(x, normalized), [x], rtol=1e-4, atol=1e-5)


def test_layer_norm_module():
    ln_t, ln_e = torch.nn.LayerNorm(5), engine.nn.LayerNorm(5)
    assert repr(ln_e) == repr(ln_t)
    assert [(n, tuple(p.shape)) for n, p in ln_e.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in ln_t.named_parameters()]
    assert ln_e.weight.tolist() == [1.0] * 5 and ln_e.bias.tolist() == [0.0] * 5


@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding(padding_idx):
    (w,) = _inputs(2, (7, 3))
    idx = np.array([[0, 2, 2], [6, 1, 0]])
    _check(lambda lib, w: lib.nn.functional.embedding(lib.tensor(idx), w, padding_idx=padding_idx), [w])


def test_embedding_module():
    torch.manual_seed(0)
    emb_t = torch.nn.Embedding(10, 4, padding_idx=1)
    emb_e = engine.nn.Embedding(10, 4, padding_idx=1)
    assert repr(emb_e) == repr(emb_t) and emb_e.weight[1].tolist() == [0.0] * 4
    emb_e.load_state_dict({"weight": engine.tensor(emb_t.weight.detach().numpy())})
    idx = [[1, 2, 3], [3, 3, 9]]
    out_t, out_e = emb_t(torch.tensor(idx)), emb_e(engine.tensor(idx))
    assert out_e.grad_fn.name() == out_t.grad_fn.name() == "EmbeddingBackward0"
    out_t.sum().backward()
    out_e.sum().backward()
    np.testing.assert_array_equal(emb_e.weight.grad.numpy(), emb_t.weight.grad.numpy())
    with pytest.raises(IndexError, match="index out of range in self"):
        emb_e(engine.tensor([10]))


def test_masked_fill_tril_triu():
    (x,) = _inputs(3, (2, 4, 4))
    mask = np.tril(np.ones((4, 4), dtype=bool)) == 0
    _check(lambda lib, x: (x * 1).masked_fill(lib.tensor(mask), float("-inf")).softmax(-1), [x])
    _check(lambda lib, x: x.masked_fill(lib.tensor(mask[0]), 2.5), [x])
    _check(lambda lib, x: lib.tril(x, -1) + x.triu(1) * 2 + lib.triu(x), [x])
    assert engine.tril(engine.ones(3, 3)).tolist() == torch.tril(torch.ones(3, 3)).tolist()


def test_attention_ops_and_batched_matmul():
    q, k, v = _inputs(4, (2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 4))

    def attention(lib, q, k, v):
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(4))
        att = att.masked_fill(lib.tril(lib.ones(5, 5)).view(1, 1, 5, 5) == 0, float("-inf"))
        y = lib.nn.functional.softmax(att, dim=-1) @ v
        return y.transpose(1, 2).contiguous().view(2, 5, 12)
    _check(attention, [q, k, v])


@pytest.mark.parametrize("is_causal", [False, True])
def test_scaled_dot_product_attention_results(is_causal):
    # The engine composes the math path (PyTorch's CPU kernel is one fused node): results and gradients agree.
    arrays = _inputs(5, (2, 2, 6, 4), (2, 2, 6, 4), (2, 2, 6, 4))
    ts, es = _both(arrays)
    out_t = torch.nn.functional.scaled_dot_product_attention(*ts, is_causal=is_causal)
    out_e = engine.nn.functional.scaled_dot_product_attention(*es, is_causal=is_causal)
    np.testing.assert_allclose(out_e.detach().numpy(), out_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    out_t.pow(2).sum().backward()
    out_e.pow(2).sum().backward()
    for t, e in zip(ts, es):
        np.testing.assert_allclose(e.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ignore_index", [-100, -1, 2])
def test_cross_entropy_ignore_index(ignore_index):
    (x,) = _inputs(6, (6, 5))
    target = np.array([1, ignore_index, 4, 2, ignore_index, 0])
    _check(lambda lib, x: lib.nn.functional.cross_entropy(x, lib.tensor(target), ignore_index=ignore_index), [x])
    _check(lambda lib, x: lib.nn.functional.cross_entropy(x, lib.tensor(target), ignore_index=ignore_index,
                                                          reduction="sum"), [x])


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell(nonlinearity):
    torch.manual_seed(0)
    cell_t = torch.nn.RNNCell(3, 4, nonlinearity=nonlinearity)
    cell_e = engine.nn.RNNCell(3, 4, nonlinearity=nonlinearity)
    assert repr(cell_e) == repr(cell_t)
    assert [n for n, _ in cell_e.named_parameters()] == [n for n, _ in cell_t.named_parameters()]
    cell_e.load_state_dict({k: engine.tensor(v.numpy()) for k, v in cell_t.state_dict().items()})
    x, h = _inputs(8, (5, 3), (5, 4))
    for hx in (None, h):
        _check(lambda lib, x: (cell_t if lib is torch else cell_e)(
            x, None if hx is None else lib.tensor(hx)), [x])
    # unrolled over a sequence, as the layers are written in Python
    xs = _inputs(9, (6, 2, 3))[0]
    h_t, h_e = None, None
    for step in xs:
        h_t, h_e = cell_t(torch.tensor(step), h_t), cell_e(engine.tensor(step), h_e)
    np.testing.assert_allclose(h_e.detach().numpy(), h_t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_split_and_chunk():
    # PyTorch's split is one node with an output per piece; the engine's nodes have one output each.
    (x,) = _inputs(10, (2, 7))
    for pieces in (lambda lib, x: x.split(3, 1), lambda lib, x: x.split([2, 5], 1),
                   lambda lib, x: lib.chunk(x, 3, 1)):
        _check(lambda lib, x: lib.cat([p * (i + 1) for i, p in enumerate(pieces(lib, x))], 1), [x],
               same_graph=False)
        assert [p.grad_fn.name() for p in pieces(engine, engine.ones(2, 7, requires_grad=True))] == \
            [p.grad_fn.name() for p in pieces(torch, torch.ones(2, 7, requires_grad=True))]
    with pytest.raises(RuntimeError, match=r"split_with_sizes expects split_sizes to sum exactly to 7"):
        engine.ones(2, 7).split([2, 4], 1)


def _cells(kind):
    torch.manual_seed(0)
    cell_t, cell_e = getattr(torch.nn, kind)(3, 4), getattr(engine.nn, kind)(3, 4)
    assert repr(cell_e) == repr(cell_t)
    assert [(n, tuple(p.shape)) for n, p in cell_e.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in cell_t.named_parameters()]
    cell_e.load_state_dict({k: engine.tensor(v.numpy()) for k, v in cell_t.state_dict().items()})
    return cell_t, cell_e


@pytest.mark.parametrize("kind", ["GRUCell", "LSTMCell"])
def test_gru_and_lstm_cells(kind):
    # Results and gradients as PyTorch's, with the same kinds of nodes; PyTorch's unsafe_chunk is one
    # node with several outputs, the engine's one node per piece.
    cell_t, cell_e = _cells(kind)
    xs, h0 = _inputs(11, (5, 2, 3), (2, 4))
    ts, es = _both([xs, h0])
    state_t = (ts[1], ts[1] * 0.5) if kind == "LSTMCell" else ts[1]
    state_e = (es[1], es[1] * 0.5) if kind == "LSTMCell" else es[1]
    for step in range(xs.shape[0]):
        state_t, state_e = cell_t(ts[0][step], state_t), cell_e(es[0][step], state_e)
    out_t = state_t[0] if kind == "LSTMCell" else state_t
    out_e = state_e[0] if kind == "LSTMCell" else state_e
    assert set(node_names(out_e)) == set(node_names(out_t))
    np.testing.assert_allclose(out_e.detach().numpy(), out_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    out_t.pow(2).sum().backward()
    out_e.pow(2).sum().backward()
    for t, e in zip(ts, es):
        np.testing.assert_allclose(e.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-6)
    for (name, p_e), p_t in zip(cell_e.named_parameters(), cell_t.parameters()):
        np.testing.assert_allclose(p_e.grad.numpy(), p_t.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    # unbatched and without a state
    x1 = _inputs(12, (3,))[0]
    one_t, one_e = cell_t(torch.tensor(x1)), cell_e(engine.tensor(x1))
    one_t = one_t[0] if kind == "LSTMCell" else one_t
    one_e = one_e[0] if kind == "LSTMCell" else one_e
    assert one_e.shape == one_t.shape == (4,)
    np.testing.assert_allclose(one_e.detach().numpy(), one_t.detach().numpy(), rtol=1e-5, atol=1e-6)
