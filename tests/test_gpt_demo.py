"""The "Done when" of issue 14: a character-level GPT written in plain PyTorch runs on the engine
with only its import changed, with PyTorch's losses (``torch==2.13.0``), and is a demo that gradviz
records and steps through."""
import types
from pathlib import Path

import numpy as np
import pytest

import gradviz
import gradviz.engine as engine
from gradviz import demos
from gradviz.demos import gpt
from graph_names import node_names  # noqa: E402

ENGINE_IMPORT = "import gradviz.engine as torch\n"


def _as_pytorch():
    """The demo's source with its one engine import replaced by ``import torch``."""
    src = Path(gpt.__file__).read_text()
    assert src.count(ENGINE_IMPORT) == 1 and src.count("gradviz") == 1
    module = types.ModuleType("gpt_on_pytorch")
    exec(compile(src.replace(ENGINE_IMPORT, "import torch\n"), "gpt_on_pytorch.py", "exec"), module.__dict__)
    return module


def test_gpt_losses_equal_pytorchs():
    torch = pytest.importorskip("torch")
    ref = _as_pytorch()
    torch.manual_seed(1337)
    data_t, vocab = ref.encode(ref.TEXT)
    model_t = ref.GPT(vocab)
    data_e, vocab_e = gpt.encode(gpt.TEXT)
    model_e = gpt.GPT(vocab_e)
    assert vocab_e == vocab and data_e.tolist() == data_t.tolist()
    assert list(model_e.state_dict()) == list(model_t.state_dict())
    model_e.load_state_dict({k: engine.tensor(v.numpy()) for k, v in model_t.state_dict().items()})
    assert model_e.wte.weight is model_e.lm_head.weight
    # the same graph, node for node
    x, y = gpt.get_batch(data_e, 0, 8, 16)
    xt, yt = ref.get_batch(data_t, 0, 8, 16)
    names_e = node_names(model_e(x, y)[1])
    assert names_e == node_names(model_t(xt, yt)[1])
    assert {"EmbeddingBackward0", "NativeLayerNormBackward0", "GeluBackward0", "MaskedFillBackward0",
            "SoftmaxBackward0", "BmmBackward0", "NllLossBackward0"} <= set(names_e)
    losses_t = ref.train(model_t, data_t)
    losses_e = gpt.train(model_e, data_e)
    assert len(losses_e) == 10
    np.testing.assert_allclose(losses_e, losses_t, rtol=2e-5)
    for (name, p_e), p_t in zip(model_e.named_parameters(), model_t.parameters()):
        np.testing.assert_allclose(p_e.detach().numpy(), p_t.detach().numpy(), rtol=1e-3, atol=1e-5, err_msg=name)




def test_gpt_is_a_demo_that_records_and_steps_backward():
    assert "gpt" in dict(demos.describe())
    with gradviz.record(values="summaries") as rec:
        losses = demos.run("gpt")
    assert len(losses) == 10 and losses[-1] < losses[0]
    t = rec.trace
    assert len(t.passes) == 10
    ops = {t.nodes[n].op for n in t.passes[0].order}
    assert {"EmbeddingBackward0", "NativeLayerNormBackward0", "GeluBackward0", "MaskedFillBackward0"} <= ops


def test_the_debugger_steps_through_the_gpts_backward():
    from gradviz import Debugger
    with Debugger.launch(demo="gpt", break_on_backward=True) as dbg:
        ops = []
        for _ in range(40):
            p = dbg.wait_paused(timeout=60)
            assert p.reason == "step"
            ops.append(p.op)
            dbg.step()
    assert ops[0] == "NllLossBackward0" and "NativeLayerNormBackward0" in ops
