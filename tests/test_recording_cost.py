"""Recording's cost without lies (issue 18): summaries made on the tensor's device and fetched
once per pass, events held back until their summaries are made, and never a stale summary."""
import math

import numpy as np
import pytest

import gradviz
from gradviz import events as ev
from gradviz.recording.recorder import Recorder
from gradviz.summary import PendingSummary, summarize

torch = pytest.importorskip("torch")


def _values_of(e):
    for name in getattr(type(e), "__dataclass_fields__", ()):
        x = getattr(e, name)
        for v in (x if isinstance(x, tuple) else (x,)):
            if isinstance(v, ev.Value):
                yield v


def _device_summary(t):
    """``t``'s summary through the device path (on the CPU: the same code, a copy that is none)."""
    from gradviz.adapters.torch import TorchAdapter
    adapter = TorchAdapter(torch)
    adapter.defer_cpu = True
    pending = adapter.summarize_later(t)
    assert type(pending) is PendingSummary and adapter.device_summaries.fetches == 0
    v = ev.Value(pending)
    pending.attach(v)
    adapter.flush()
    assert adapter.device_summaries.fetches == 1
    return v.summary


def _same(a, b, norm_rtol=1e-6):
    assert (a.shape, a.dtype, a.numel, a.nan, a.inf, a.sampled) == (b.shape, b.dtype, b.numel, b.nan, b.inf, b.sampled)
    for name in ("min", "max", "zeros", "hist_lo", "hist_hi"):
        x, y = getattr(a, name), getattr(b, name)
        assert x == y or (math.isnan(x) and math.isnan(y)), (name, x, y)
    assert a.norm == pytest.approx(b.norm, rel=norm_rtol, abs=0.0)
    for name in ("mean", "std", "mean_abs"):  # from the same sample: to float rounding
        x, y = getattr(a, name), getattr(b, name)
        assert x == pytest.approx(y, rel=1e-9, abs=1e-300) or (math.isnan(x) and math.isnan(y)), (name, x, y)
    assert a.hist == b.hist


def _cases():
    g = torch.Generator().manual_seed(0)
    big = torch.randn(300, 70, generator=g)
    holes = torch.randn(5000, generator=g)
    holes[[3, 77, 4000]] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    relu = torch.relu(torch.randn(64, 33, generator=g))
    return {
        "small float32": torch.randn(7, 51, generator=g),
        "large float32, sampled": big,
        "transposed view": big.t(),
        "float64": torch.randn(40, 3, generator=g, dtype=torch.float64),
        "float16": torch.randn(100, generator=g).half(),
        "int64": torch.arange(-50, 150).reshape(10, 20),
        "NaN and Inf, sampled": holes,
        "only NaN": torch.full((5,), float("nan")),
        "constant": torch.full((9,), 3.25),
        "half zeros (ReLU)": relu,
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_device_path_summaries_equal_summarize(name):
    t = _cases()[name]
    _same(_device_summary(t), summarize(t.numpy()), norm_rtol=1e-3 if t.dtype == torch.float16 else 1e-6)


@pytest.mark.parametrize("name", list(_cases()) + ["large, torch's reductions"])
def test_cpu_path_summaries_equal_summarize(name):
    from gradviz.adapters.torch import TorchAdapter
    t = _cases()[name] if name in _cases() else torch.randn(300, 300)
    adapter = TorchAdapter(torch)
    got = adapter.summarize_later(t)
    if type(got) is PendingSummary:
        v = ev.Value(got)
        got.attach(v)
        adapter.flush()
        got = v.summary
    _same(got, summarize(t.numpy()), norm_rtol=1e-3 if t.dtype == torch.float16 else 1e-6)


def test_a_pending_summary_resolves_every_value_and_view_holding_it():
    from gradviz.summary import Batch
    batch = Batch()
    p = batch.add(np.arange(6.0).reshape(2, 3))
    held = [ev.Value(p), ev.Value(p)]
    for v in held:
        p.attach(v)
    view = p.with_shape((3, 2))
    through_view = ev.Value(view)
    view.attach(through_view)
    batch.resolve()
    assert held[0].summary is held[1].summary and held[0].summary.shape == (2, 3)
    assert through_view.summary.shape == (3, 2) and through_view.summary.max == 5.0 == held[0].summary.max


def _odd_arrays():
    rng = np.random.default_rng(0)
    with_nan = rng.standard_normal(50).astype(np.float32)
    with_nan[[4, 9]] = [np.nan, np.inf]
    return [rng.standard_normal((7, 51)).astype(np.float32), np.full(5, 2.5), with_nan, np.full(3, np.nan),
            np.array([-1e308, 1e308]), np.array([5e-324, 1e-323, 0.0]), np.arange(-3, 9), np.array([True, False]),
            rng.standard_normal(4096).astype(np.float16), np.asfortranarray(rng.standard_normal((30, 20))),
            np.maximum(rng.standard_normal(300), 0.0), np.array([1e200, 1e200])]


def test_a_batch_of_small_summaries_equals_summarize_one_by_one():
    from gradviz.summary import Batch
    batch = Batch()
    # each also four times over: arrays of one size are summarised as the rows of a matrix
    arrays = _odd_arrays() + [a for a in _odd_arrays() for _ in range(4)]
    pendings = [batch.add(a) for a in arrays]
    values = []
    for p in pendings:
        values.append(ev.Value(p))
        p.attach(values[-1])
    expected = [summarize(a.copy(order="K")) for a in arrays]
    for a in arrays:
        a[...] = 0  # written after: the batch holds its own copies
    batch.resolve()
    assert len(batch) == 0
    for v, e in zip(values, expected):
        _same(v.summary, e, norm_rtol=1e-6)


def test_large_arrays_read_exactly_now_and_their_samples_batched():
    from gradviz.summary import Batch, summarize_into
    rng = np.random.default_rng(1)
    huge = rng.standard_normal(5000) * 1e150  # (squares near the largest float)
    holes = rng.standard_normal(9000)
    holes[7] = np.nan  # read at once, exactly
    arrays = [rng.standard_normal((300, 70)).astype(np.float32), np.asfortranarray(rng.standard_normal((90, 80))),
              np.full(10000, -1.5), np.maximum(rng.standard_normal(20000), 0).astype(np.float32), huge, holes,
              rng.integers(0, 5, 6000)] + [rng.standard_normal(9000) for _ in range(4)]
    batch = Batch()
    got = [summarize_into(batch, a) for a in arrays]
    assert type(got[5]) is not PendingSummary and sum(type(g) is PendingSummary for g in got) == 10
    values = []
    for g in got:
        values.append(ev.Value(g))
        if type(g) is PendingSummary:
            g.attach(values[-1])
    expected = [summarize(a.copy(order="K")) for a in arrays]
    for a in arrays:
        a[...] = 0
    batch.resolve()
    for v, e in zip(values, expected):
        assert v.summary.sampled
        _same(v.summary, e)


def _mlp(depth):
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(16, 16), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers)


class _HostReads:
    """Counts what makes a program wait for its device: reads of a tensor's values from the host
    (``.item()`` and ``.tolist()``, ``.cpu()``, ``.numpy()``, ``_local_scalar_dense`` at the
    dispatcher)."""

    def __init__(self, monkeypatch):
        from torch.utils._python_dispatch import TorchDispatchMode
        self.count = 0
        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default:
                    counter.count += 1
                return func(*args, **(kwargs or {}))
        self.mode = Mode()
        for name in ("tolist", "cpu", "numpy"):
            original = getattr(torch.Tensor, name)

            def counted(self, *args, _original=original, **kwargs):
                counter.count += 1
                return _original(self, *args, **kwargs)
            monkeypatch.setattr(torch.Tensor, name, counted)


def _reads_per_iteration(monkeypatch, depth, iterations=2):
    model = _mlp(depth)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 16)
    reads = _HostReads(monkeypatch)
    rec = gradviz.record(values="summaries")
    with rec:
        rec._attachment._torch.recording.adapter.defer_cpu = True
        with reads.mode:
            for _ in range(iterations):
                opt.zero_grad()
                model(x).square().mean().backward()
                opt.step()
    nodes = sum(1 for e in rec.trace.events if type(e) is ev.NodeCreated and e.iteration == 0)
    return reads.count / iterations, nodes


def test_host_reads_per_pass_do_not_grow_with_the_graph(monkeypatch):
    small, small_nodes = _reads_per_iteration(monkeypatch, 2)
    monkeypatch.undo()
    large, large_nodes = _reads_per_iteration(monkeypatch, 40)
    assert small_nodes <= 12 and large_nodes >= 200
    # One fetch of the pass's summaries, the forward's with it, and the optimizer step's norms.
    assert small == large <= 3


def _record(defer, program, values="summaries"):
    delivered = []
    rec = Recorder(values=values, sink=delivered.append)
    with rec:
        rec._attachment._torch.recording.adapter.defer_cpu = defer
        program()
    return rec, delivered


def _training(iterations=2):
    model = _mlp(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 16)

    def run():
        for _ in range(iterations):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    return run


def test_held_events_reach_the_sink_complete_and_in_order():
    torch.manual_seed(1)
    _, plain = _record(False, _training())
    torch.manual_seed(1)
    rec, deferred = _record(True, _training())
    assert [type(e).__name__ for e in deferred] == [type(e).__name__ for e in plain]
    assert not rec.producer._held
    values = [v for e in deferred for v in _values_of(e)]
    assert values and all(type(v.summary) is not PendingSummary for v in values)
    for a, b in zip((v for e in deferred for v in _values_of(e)), (v for e in plain for v in _values_of(e))):
        _same(a.summary, b.summary)


def test_a_program_that_never_ends_a_pass_gets_its_summaries_at_exit(monkeypatch):
    import gradviz.recording.producer as producer
    monkeypatch.setattr(producer, "FLUSH_EVERY", 5)
    model = _mlp(6)
    x = torch.randn(4, 16)
    seen = []

    def forward_only():
        model(x)
        seen.append(len(rec.producer._held))

    rec = None
    delivered = []
    rec = Recorder(values="summaries", sink=delivered.append)
    with rec:
        rec._attachment._torch.recording.adapter.defer_cpu = True
        forward_only()
        assert 0 < seen[0] < 5  # held back, never more than FLUSH_EVERY at a time
    made = [e for e in delivered if type(e) is ev.NodeCreated and e.value is not None]
    assert len(made) == 12 and all(type(e.value.summary) is not PendingSummary for e in made)
    assert made[-1].value.summary.max == pytest.approx(float(model(x).detach().max()))


PAUSE_SCRIPT = """
import torch
torch.manual_seed(0)
w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
x = torch.tensor([[2.0, 1.0]])
(x @ w).relu().sum().backward()
"""


def test_a_pause_sees_every_event_before_it_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADVIZ_DEFER_CPU", "1")
    script = tmp_path / "prog.py"
    script.write_text(PAUSE_SCRIPT)
    with gradviz.Debugger.launch(script=script, values="summaries", breakpoints=[{"op": "MmBackward0"}]) as dbg:
        p = dbg.wait_paused(timeout=60)
        assert p.op == "MmBackward0"
        entered = [e for e in dbg.trace.events if type(e) is ev.NodeEntered]
        assert entered[-1].node == p.node  # the paused node's entry is there, with its value
        assert entered[-1].grad_outputs[0].summary.max == 1.0  # d(sum)/d(relu) where x@w > 0
        relu_made = [e for e in dbg.trace.events if type(e) is ev.NodeCreated and e.op == "ReluBackward0"]
        assert (relu_made[0].value.summary.max, relu_made[0].value.summary.min) == (5.0, 0.0)  # relu([5, -3.5])
        dbg.resume()
        assert dbg.wait_paused(timeout=60).reason == "exited"


# -- never stale --------------------------------------------------------------------------------
def _described(events, name):
    return [e.value.summary for e in events if type(e) is ev.TensorDescribed and e.name == name]


@pytest.mark.parametrize("defer", [False, True])
def test_an_in_place_write_after_the_event_does_not_change_its_summary(defer):
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)

    def program():
        y = x * 2
        y.add_(100.0)  # after MulBackward0's event: its output was [2, -4, 6]
        y.sum().backward()
    _, events = _record(defer, program)
    made = [e for e in events if type(e) is ev.NodeCreated and e.op == "MulBackward0"]
    assert (made[0].value.summary.min, made[0].value.summary.max) == (-4.0, 6.0)
    _same(made[0].value.summary, summarize(np.array([2.0, -4.0, 6.0], dtype=np.float32)))


@pytest.mark.parametrize("defer", [False, True])
def test_data_writes_between_iterations_are_seen(defer):
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    gradviz.name(w, "w")
    expected = []

    def program():
        for i in range(3):
            expected.append(summarize(w.detach().numpy().copy()))
            (w * 2).sum().backward()
            w.data.mul_(-1.5)  # through .data: PyTorch's version counter of w does not move
            w.data[0] = 10.0 * i
            w.grad = None
    _, events = _record(defer, program)
    got = _described(events, "w")
    assert len(got) == 3
    for a, b in zip(got, expected):
        _same(a, b)
    assert [s.max for s in got] == [3.0, 0.0, 10.0]


@pytest.mark.parametrize("defer", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_an_optimizer_step_in_place_is_seen_next_iteration(defer, fused):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    kwargs = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.Adam(model.parameters(), lr=0.5, **kwargs)
    x = torch.randn(5, 4)
    expected = []

    def program():
        for _ in range(3):
            expected.append(summarize(model.weight.detach().numpy().copy()))
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    _, events = _record(defer, program)
    got = _described(events, "model.weight")
    assert len(got) == 3 and got[0].max != got[1].max
    for a, b in zip(got, expected):
        _same(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_summaries_of_work_on_a_side_stream_are_of_its_values():
    side = torch.cuda.Stream()
    x = torch.ones(1 << 20, device="cuda", requires_grad=True)
    events = []
    rec = Recorder(values="summaries", sink=events.append)
    with rec, torch.cuda.stream(side):
        y = x * 3.0
        y.sum().backward()
        y.detach().mul_(0)  # after its event, in the same stream: the summary is of the 3s
    made = [e for e in events if type(e) is ev.NodeCreated and e.op == "MulBackward0"]
    assert made[0].value.summary.min == made[0].value.summary.max == 3.0
    assert made[0].value.summary.norm == pytest.approx(3.0 * 1024)


def test_recording_spaces_the_collectors_passes_and_restores_them():
    import gc
    before = gc.get_threshold()
    marker = type("Marker", (), {})()
    with gradviz.record(values="summaries"):
        assert gc.get_threshold() == (10_000, before[1], 100)  # (a full collection after 100 middle ones)
        assert any(o is marker for o in gc.get_objects())  # nothing hidden from the program
    assert gc.get_threshold() == before


def _events_and_hooks(monkeypatch, acts_before_nodes):
    from gradviz.adapters.torch.hooks import TorchRecording
    from gradviz.recording.producer import Producer
    monkeypatch.setattr(Producer, "acts_before_nodes", acts_before_nodes)
    hooked = []
    original = TorchRecording.__dict__["_hook_graph"]

    def counted(self, roots):
        handles = original(self, roots)
        hooked.append(len(handles))
        return handles
    monkeypatch.setattr(TorchRecording, "_hook_graph", counted)
    model = _mlp(3)
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    got = []
    with Recorder(values="summaries", sink=got.append):
        model(x).relu().sum().backward()
    monkeypatch.setattr(TorchRecording, "_hook_graph", original)
    return got, hooked


def test_a_recording_nothing_pauses_in_hooks_each_node_once_with_the_same_events(monkeypatch):
    # one hook a grad_fn node (entry and exit told together) where nothing acts before a node runs
    one, hooked_one = _events_and_hooks(monkeypatch, False)
    two, hooked_two = _events_and_hooks(monkeypatch, True)
    accumulators = 6  # (3 Linear layers: weight and bias; a pre hook and a post-accumulate hook each)
    grad_fns = hooked_two[0] // 2 - accumulators
    assert hooked_one == [grad_fns + 2 * accumulators] and grad_fns > 5
    kinds = [type(e).__name__ for e in one]
    assert kinds == [type(e).__name__ for e in two]
    entered = [i for i, k in enumerate(kinds) if k == "NodeEntered"]
    assert len(entered) == grad_fns + accumulators
    assert all(kinds[i + 1] in ("NodeExited", "GradAccumulated") for i in entered)
    for a, b in zip(one, two):
        for va, vb in zip(_values_of(a), _values_of(b)):
            _same(va.summary, vb.summary, norm_rtol=0)
