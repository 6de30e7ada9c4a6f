"""The gradient plots: what gradviz.app.plots computes (no Qt) and what each GradPlot tab draws."""
import math

import numpy as np
import pytest

import gradviz
from gradviz import demos
from gradviz.app import plots

MLP_LAYERS = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]


def _record(fn):
    with gradviz.record() as rec:
        fn()
    return rec.trace


@pytest.fixture(scope="module")
def mlp():
    return _record(lambda: demos.run("mlp"))


def test_heatmap_tiles_a_conv_weight_one_row_per_output_channel_with_nan_gaps():
    a = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    img = plots.heatmap_image(a)
    assert img.shape == (2 * 3 - 1, 3 * 3 - 1)
    for r in range(2):
        for c in range(3):
            np.testing.assert_array_equal(img[3 * r:3 * r + 2, 3 * c:3 * c + 2], a[r, c])
    assert np.isnan(img[2]).all() and np.isnan(img[:, [2, 5]]).all()
    assert np.isfinite(img).sum() == a.size


def test_heatmap_caps_and_other_ranks():
    big = np.ones((100, 50, 3, 3))
    rows, cols = plots.tile_grid(big.shape)
    assert (rows, cols) == (plots.MAX_TILE_ROWS, plots.MAX_TILE_COLS)
    assert plots.heatmap_image(big).shape == (rows * 4 - 1, cols * 4 - 1)
    # a first layer with 3 input channels: rows capped so the grid stays within MAX_TILE_ASPECT
    assert plots.tile_grid((64, 3, 7, 7)) == (12, 3)
    m = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(plots.heatmap_image(m), m)
    np.testing.assert_array_equal(plots.heatmap_image(np.arange(4.0)), [[0, 1, 2, 3]])
    conv1d = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)  # (out, in, k): one tile per out channel
    img = plots.heatmap_image(conv1d)
    assert img.shape == (3, 2 * 5 - 1)
    np.testing.assert_array_equal(img[:, 5:], conv1d[1])
    for nothing in (None, np.float32(3.0), np.zeros((0, 3)), np.zeros((1, 1, 1, 1, 1))):
        assert plots.heatmap_image(nothing) is None


def test_heatmap_of_a_recorded_conv_weight_grad():
    def conv():
        import gradviz.engine as torch
        from gradviz.engine import nn
        torch.manual_seed(0)
        net = nn.Conv2d(2, 3, 3)
        net(torch.randn(1, 2, 5, 5)).pow(2).sum().backward()
    trace = _record(conv)
    g = trace.grad("net.weight").array
    img = plots.heatmap_image(g)
    assert g.shape == (3, 2, 3, 3) and img.shape == (11, 7)
    np.testing.assert_allclose(img[8:11, 4:7], g[2, 1])


def test_norm_history_has_one_point_per_iteration_matching_the_kept_grads(mlp):
    its, norms = plots.grad_norm_history(mlp, "2.weight")
    assert its.tolist() == list(range(mlp.iterations)) == [0, 1, 2, 3, 4]
    kept = [v.array for _, v in mlp.grad_history("2.weight")]
    np.testing.assert_allclose(norms, [np.linalg.norm(a) for a in kept], rtol=1e-5)
    assert len(set(np.round(norms, 8))) == 5  # training changes it every iteration


def test_norm_history_of_a_backward_node_follows_it_across_iterations(mlp):
    addmm = [k for k, d in mlp.graph.nodes(data=True) if d.get("op") == "AddmmBackward0"]
    first = [k for k in addmm if mlp.graph.nodes[k]["iteration"] == 0]
    assert len(first) == 3
    for rank, key in enumerate(first):
        its, norms = plots.grad_norm_history(mlp, key)
        assert its.tolist() == [0, 1, 2, 3, 4]
        peers = [k for k in addmm if mlp.graph.nodes[k]["iteration"] == 3]
        assert norms[3] == pytest.approx(np.linalg.norm(mlp.grad(peers[rank], pass_index=3).array), rel=1e-5)


def test_norm_history_is_nan_where_the_grad_held_nan():
    trace = _record(lambda: demos.run("nan"))
    its, norms = plots.grad_norm_history(trace, "p")
    assert its.tolist() == [0] and math.isnan(norms[0])


def test_latest_grad_finds_the_last_pass_that_reached_a_node(mlp):
    first_t = next(k for k, d in mlp.graph.nodes(data=True) if d.get("op") == "TBackward0")
    v = plots.latest_grad(mlp, first_t)
    assert v is mlp.grad(first_t, pass_index=0)
    assert plots.latest_grad(mlp, "4.bias") is mlp.grad("4.bias")
    assert plots.latest_grad(gradviz.Trace(), "t1") is None


def test_gradient_flow_rows_in_layer_order_with_mean_rms_and_max(mlp):
    rows = plots.gradient_flow(mlp)
    assert [r.name for r in rows] == MLP_LAYERS
    for r in rows:
        g = mlp.grad(r.name).array.astype(np.float64)
        assert r.shape == g.shape
        assert r.mean_abs == pytest.approx(np.mean(np.abs(g)), rel=1e-9)  # <= 4,096 elements: exact
        assert r.rms == pytest.approx(np.sqrt(np.mean(g ** 2)), rel=1e-5)
        assert r.max_abs == pytest.approx(np.abs(g).max(), rel=1e-6)
        assert r.flag == ""
    first = plots.gradient_flow(mlp, pass_index=0)
    g0 = mlp.grad("0.weight", pass_index=0).array
    assert first[0].rms == pytest.approx(np.sqrt(np.mean(g0.astype(float) ** 2)), rel=1e-5)
    assert first[0].rms != rows[0].rms
    assert plots.gradient_flow(mlp, pass_index=99) == []


def test_gradient_flow_skips_frozen_parameters():
    trace = _record(lambda: demos.run("resnet"))
    assert [r.name for r in plots.gradient_flow(trace)] == ["fc.weight", "fc.bias"]
    assert sum(t.kind == "frozen" for t in trace.tensors.values()) == 60


def test_gradient_flow_flags_vanishing_and_exploding():
    def tiny_and_huge():
        import gradviz.engine as torch
        a = gradviz.name(torch.ones(3, requires_grad=True), "a")
        b = gradviz.name(torch.ones(3, requires_grad=True), "b")
        c = gradviz.name(torch.ones(3, requires_grad=True), "c")
        (a * 1e-9 + b * 5e3 + c).sum().backward()
    rows = {r.name: r for r in plots.gradient_flow(_record(tiny_and_huge))}
    assert [rows[n].flag for n in "abc"] == ["vanishing", "exploding", ""]
    assert rows["a"].mean_abs == pytest.approx(1e-9) and rows["b"].max_abs == pytest.approx(5e3)
    nan_rows = plots.gradient_flow(_record(lambda: demos.run("nan")))
    assert [(r.name, r.flag, r.nonfinite) for r in nan_rows] == [("p", "exploding", 2)]
    assert plots.flag_of(plots.VANISHING_MEAN, plots.EXPLODING_MAX, 0) == ""


# -- the widget -------------------------------------------------------------------------------------
@pytest.fixture
def plot(qtbot):
    from gradviz.ui.grad_plot import GradPlot
    w = GradPlot()
    qtbot.addWidget(w)
    w.resize(420, 320)
    w.show()
    return w


def _message(w, tab):
    page = w.pages[tab]
    return page.message.text() if page.currentIndex() == 0 else None


def test_every_tab_says_what_is_missing_before_anything_is_shown(plot):
    assert plot.count() == 4
    for tab in plot.pages:
        assert _message(plot, tab)
    assert plot.shown is plot.heatmap_shown is plot.history_shown is None and plot.flow_shown == []


def test_tabs_show_the_mlp_recording(plot, mlp):
    key = f"t{mlp.tensor_by_name('0.weight').id}"
    grad = mlp.grad(key)
    plot.show_value(grad, "gradient at 0.weight")
    plot.show_tensor(mlp, key)
    plot.show_flow(mlp)
    kind, x, heights = plot.shown
    assert kind == "values" and heights.tolist() == grad.array.ravel().tolist()
    np.testing.assert_array_equal(plot.heatmap_shown, grad.array)
    its, norms = plot.history_shown
    assert its.tolist() == [0, 1, 2, 3, 4] and norms[-1] == pytest.approx(np.linalg.norm(grad.array), rel=1e-5)
    assert [r.name for r in plot.flow_shown] == MLP_LAYERS
    assert all(_message(plot, tab) is None for tab in plot.pages)
    assert "iteration 4" in plot.flow_note.text()
    plot.show_value(mlp.grad("2.weight"))  # 256 elements: the summary's histogram
    kind, x, heights = plot.shown
    assert kind == "histogram" and heights.sum() == 256 and plot.tabText(0) == "Histogram"


def test_tabs_with_nothing_to_show_say_so(plot, mlp):
    loss = next(k for k, d in mlp.graph.nodes(data=True) if d.get("op") == "NllLossBackward0")
    assert mlp.graph.nodes[loss]["iteration"] == 0  # ran in pass 0 only; its counterparts in the others
    plot.show_value(plots.latest_grad(mlp, loss))
    assert plot.shown[0] == "values" and plot.shown[2].tolist() == [1.0]
    plot.show_tensor(mlp, loss)
    assert plot.heatmap_shown is None and "No 2-D gradient" in _message(plot, "Heatmap")
    assert plot.history_shown is not None and len(plot.history_shown[0]) == 5
    plot.show_tensor(mlp, None)
    assert _message(plot, "Norm over iterations") and _message(plot, "Heatmap")
    nan_trace = _record(lambda: demos.run("nan"))
    plot.show_tensor(nan_trace, "p")
    assert "NaN at iteration 0" in _message(plot, "Norm over iterations")
    plot.show_flow(gradviz.Trace())
    assert plot.flow_shown == [] and _message(plot, "Gradient flow") == "No backward pass yet."


def test_flow_tab_for_the_frozen_resnet_shows_only_fc(plot):
    trace = _record(lambda: demos.run("resnet"))
    plot.show_flow(trace)
    assert [r.name for r in plot.flow_shown] == ["fc.weight", "fc.bias"]
    assert "60 frozen parameters" in plot.flow_note.text()
    ticks = plot.flow_plot.getPlotItem().getAxis("left")._tickLevels[0]
    assert [label for _, label in ticks] == ["fc.weight", "fc.bias"]


def test_heatmap_of_complex_values_shows_their_magnitudes():
    img = plots.heatmap_image(np.array([[3 + 4j, -2j], [1, 0]], dtype=np.complex64))
    assert img.tolist() == [[5.0, 2.0], [1.0, 0.0]]
