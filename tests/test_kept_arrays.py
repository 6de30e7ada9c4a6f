"""Full values keep the engine's arrays as the program's own (no copy: the cost of a copy per
value would double a recorded step), so a later in-place write must not change the record: the
engine tells of every write into an array it handed out (``hooks.array_writing``), and the
recording copies the arrays it keeps from that memory first, and only then."""
import numpy as np

import gradviz
import gradviz.engine as gt
from gradviz import events as ev
from gradviz.engine import hooks


def _made(rec, op):
    return [e for e in rec.trace.events if isinstance(e, ev.NodeCreated) and e.op == op]


def test_writes_after_the_event_leave_the_kept_values_as_they_were():
    x = gt.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    with gradviz.record(values="full") as rec:
        y = x * 2
        z = x + 1
        w = x - 1
        with gt.no_grad():
            y.add_(100)  # an in-place op outside the graph
            z[0] = -5  # an item assignment
        w.data.mul_(0)  # through .data
    (mul,), (add,), (sub,) = _made(rec, "MulBackward0"), _made(rec, "AddBackward0"), _made(rec, "SubBackward0")
    assert mul.value.array.tolist() == [2.0, 4.0, 6.0] and mul.value.summary.max == 6.0
    assert add.value.array.tolist() == [2.0, 3.0, 4.0]
    assert sub.value.array.tolist() == [0.0, 1.0, 2.0]
    assert y._np.tolist() == [102.0, 104.0, 106.0] and z._np.tolist() == [-5.0, 3.0, 4.0]  # the program's own


def test_a_write_through_a_view_keeps_the_base_and_its_views_as_they_were():
    x = gt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    with gradviz.record(values="full") as rec:
        y = x * 1.5
        row = y[1]  # a view of y's memory, recorded as a copy
        with gt.no_grad():
            row.fill_(0.0)  # writes y's memory through the view
    (mul,) = _made(rec, "MulBackward0")
    assert mul.value.array.tolist() == [[0.0, 1.5, 3.0], [4.5, 6.0, 7.5]]
    assert y._np.tolist() == [[0.0, 1.5, 3.0], [0.0, 0.0, 0.0]]


def test_an_array_nobody_writes_is_kept_without_a_copy():
    x = gt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with gradviz.record(values="full") as rec:
        y = x * 3
        y.sum().backward()
    (mul,) = _made(rec, "MulBackward0")
    assert mul.value.array is y._np


def test_the_write_moment_is_listened_to_only_while_recording():
    assert not hooks.array_writing
    for values in ("summaries", "full"):
        with gradviz.record(values=values):
            assert len(hooks.array_writing) == 1
        assert not hooks.array_writing


def test_a_summary_made_before_a_write_does_not_serve_the_memory_after_it():
    # Within a pass one summary serves every view of the same memory (a transpose, say), unless
    # the program wrote into it between the two.
    x = gt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    with gradviz.record(values="summaries") as rec:
        y = x * 2
        with gt.no_grad():
            y.add_(100)
        y.t()
        u = x * 3
        u.t()  # (no write: the transpose shares u's summary, in its own shape)
    (mul2, mul3), (t_y, t_u) = _made(rec, "MulBackward0"), _made(rec, "TBackward0")
    assert (mul2.value.summary.max, t_y.value.summary.max, t_y.value.summary.shape) == (10.0, 110.0, (3, 2))
    assert t_u.value.summary.max == mul3.value.summary.max == 15.0 and t_u.value.summary.shape == (3, 2)


def test_every_engine_writer_tells_before_it_writes():
    seen = []

    def hook(array):
        seen.append(array.copy())  # the values before the write
    gt.manual_seed(0)
    lin = gt.nn.Linear(2, 2)
    bn = gt.nn.BatchNorm1d(2)
    opt = gt.optim.SGD(lin.parameters(), lr=0.5)
    x = gt.randn(4, 2)
    with hooks.array_writing.register(hook):
        bn(lin(x)).sum().backward()  # the running statistics
        lin(x).sum().backward()  # accumulation into .grad
        gt.nn.utils.clip_grad_norm_(lin.parameters(), 0.1)
        gt.nn.utils.clip_grad_value_(lin.parameters(), 0.01)
        weight_before = lin.weight._np.copy()
        opt.step()
        lin.load_state_dict({"weight": gt.zeros(2, 2), "bias": gt.zeros(2)})
    # batch norm (num_batches_tracked, running mean and var), .grad accumulated (weight, bias), each
    # clip (weight and bias grads), the step (weight, bias), load_state_dict (weight, bias)
    assert len(seen) == 3 + 2 + 2 + 2 + 2 + 2
    assert any(np.array_equal(s, weight_before) for s in seen)  # the step told of the weight as it was


def test_a_gradient_that_is_a_numpy_scalar_is_kept_as_it_is():
    # Some of the engine's backward rules hand a numpy scalar on (a mean's gradient, say): it
    # cannot change, so nothing is watched, and recording goes on.
    from gradviz.trace.model import _values_of
    gt.manual_seed(0)
    x, t = gt.randn(3, 2, requires_grad=True), gt.randn(3, 2)
    with gradviz.record(values="full") as rec:
        loss = gt.nn.functional.mse_loss(x, t)
        (loss + loss * 0.01).backward()
    scalars = [v for e in rec.trace.events for v in _values_of(e)
               if v is not None and v.array is not None and type(v.array) is not np.ndarray]
    assert scalars and all(np.ndim(v.array) == 0 and float(v.array) == v.summary.max for v in scalars)
