"""Every built-in demo runs, and does what it says."""
import subprocess
import sys

import numpy as np
import pytest

import gradviz
from gradviz import demos


def test_seed():
    a, b = demos.run("seed")
    assert a.grad.tolist() == [36., 81.] and b.grad.tolist() == [-12., -8.]


def test_mlp_learns():
    losses = demos.run("mlp")
    assert len(losses) == 5 and losses[-1] < 0.5 * losses[0]


def test_resnet_trains_only_the_new_fc():
    model = demos.run("resnet")
    assert [n for n, p in model.named_parameters() if p.grad is not None] == ["fc.weight", "fc.bias"]
    assert model.fc.weight.shape == (10, 512)


def test_nan_gradient_appears_for_the_coinciding_points():
    p = demos.run("nan")
    g = p.grad.numpy()
    assert np.isnan(g[1]).all() and np.isfinite(g[[0, 2]]).all()


def test_control_flow_changes_depth():
    assert demos.run("control-flow") == [1, 2, 3, 1]


@pytest.mark.parametrize("name", ["seed", "nan"])
def test_demo_runs_as_a_module(name):
    out = subprocess.run([sys.executable, "-m", f"gradviz.demos.{demos.DEMOS[name][0]}"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""


def test_every_demo_records():
    for name in filter(demos.available, demos.DEMOS):
        with gradviz.record(values="summaries") as rec:
            demos.run(name)
        assert rec.trace.passes, name
