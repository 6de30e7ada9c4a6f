"""The backward debugger: the program in a child process, paused, stepped and inspected."""
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

import gradviz
from gradviz import Debugger
from gradviz.debug import protocol
from gradviz.debug.breakpoints import Peer
from gradviz.debug.debugger import DebuggerError, live_children

SEED_DEMO = os.path.join(os.path.dirname(gradviz.__file__), "demos", "seed.py")
NAN_DEMO = os.path.join(os.path.dirname(gradviz.__file__), "demos", "nan.py")


def _line(path, needle):
    with open(path) as f:
        return next(i for i, line in enumerate(f, 1) if needle in line)


def test_seed_stepping_follows_pytorch_order_with_analytic_grads():
    q_line = _line(SEED_DEMO, "    Q = 3*a**3 - b**2")
    expected = [("SubBackward0", [1., 1.]), ("PowBackward0", [-1., -1.]), ("AccumulateGrad", [-12., -8.]),
                ("MulBackward0", [1., 1.]), ("PowBackward0", [3., 3.]), ("AccumulateGrad", [36., 81.])]
    with Debugger.launch(demo="seed", break_on_backward=True) as dbg:
        seen = []
        for _ in expected:
            p = dbg.wait_paused(timeout=20)
            assert p.reason == "step" and p.phase == "backward" and p.pass_index == 0
            seen.append((p.op, p.grad_outputs[0].tolist()))
            assert p.source is not None and p.source.file == SEED_DEMO and p.source.line == q_line
            dbg.step()
        assert seen == expected
        end = dbg.wait_paused(timeout=20)
        assert end.reason == "exited" and end.exit_code == 0
        np.testing.assert_array_equal(dbg.trace.grad("a").array, [36., 81.])  # == 9*a**2
        np.testing.assert_array_equal(dbg.trace.grad("b").array, [-12., -8.])  # == -2*b
        assert "a.grad = tensor([36., 81.])" in "".join(t for s, t in dbg.output if s == "stdout")
    assert dbg.proc.returncode == 0


def test_anomaly_breakpoint_stops_where_nan_is_made():
    sqrt_line = _line(NAN_DEMO, "dist = ((p[i]")
    with Debugger.launch(demo="nan", breakpoints=[{"anomaly": True}]) as dbg:
        p = dbg.wait_paused(timeout=20)
        assert (p.reason, p.op, p.phase) == ("anomaly", "SqrtBackward0", "backward-done")
        assert p.source.file == NAN_DEMO and p.source.line == sqrt_line
        assert np.isinf(p.grad_inputs[0]).all()
        assert "NaN or Inf" in p.detail
        dbg.resume()
        assert dbg.wait_paused(timeout=20).reason == "exited"


def test_op_breakpoints_can_be_added_and_removed():
    with Debugger.launch(demo="seed", stop_on_entry=True) as dbg:
        p = dbg.wait_paused(timeout=20)
        assert p.reason == "entry" and p.node is None
        bp = dbg.add_breakpoint(op="PowBackward0")
        dbg.resume()
        first = dbg.wait_paused(timeout=20)
        assert (first.reason, first.op, first.grad_outputs[0].tolist()) == ("breakpoint", "PowBackward0", [-1., -1.])
        dbg.remove_breakpoint(bp)
        assert dbg.breakpoints == {}
        dbg.resume()
        assert dbg.wait_paused(timeout=20).reason == "exited"


def test_tensor_breakpoint_and_fetch():
    with Debugger.launch(demo="seed", breakpoints=[{"tensor": "a"}]) as dbg:
        p = dbg.wait_paused(timeout=20)
        assert (p.reason, p.op, p.phase) == ("breakpoint", "AccumulateGrad", "backward-done")
        assert p.grad_inputs[0].tolist() == [36., 81.]
        np.testing.assert_array_equal(dbg.fetch(grad="a"), [36., 81.])
        np.testing.assert_array_equal(dbg.fetch(tensor="a"), [2., 3.])
        np.testing.assert_array_equal(dbg.fetch(grad="b"), [-12., -8.])
        with pytest.raises(KeyError, match="no live tensor named 'zzz'"):
            dbg.fetch(tensor="zzz")
        dbg.resume()
        assert dbg.wait_paused(timeout=20).reason == "exited"
        with pytest.raises(DebuggerError, match="exited"):
            dbg.step()


def test_grad_norm_breakpoint():
    with Debugger.launch(demo="seed", breakpoints=[{"grad_norm_above": 50.0}]) as dbg:
        p = dbg.wait_paused(timeout=20)
        assert p.op == "AccumulateGrad" and p.grad_outputs[0].tolist() == [36., 81.]  # norm 88.6
        dbg.resume()
        assert dbg.wait_paused(timeout=20).reason == "exited"


def test_forward_stepping_watches_the_graph_grow():
    with Debugger.launch(demo="seed", break_on_forward=True) as dbg:
        ops, sizes = [], []
        for _ in range(4):
            p = dbg.wait_paused(timeout=20)
            assert p.phase == "forward"
            ops.append(p.op)
            sizes.append(sum(1 for _, d in dbg.trace.graph.nodes(data=True) if d["kind"] == "grad_fn"))
            dbg.resume()
        assert ops == ["PowBackward0", "MulBackward0", "PowBackward0", "SubBackward0"]
        assert sizes == [1, 2, 3, 4]
        assert dbg.wait_paused(timeout=20).reason == "exited"


FULL_VALUE_SCRIPT = """
import gradviz.engine as torch
big = torch.ones(600, 600, requires_grad=True)
loss = (big * 2).sum()
loss.backward()
"""


def test_fetch_is_not_limited_by_the_budget(tmp_path):
    script = tmp_path / "big.py"
    script.write_text(FULL_VALUE_SCRIPT)
    with Debugger.launch(script=script, values="summaries", budget_bytes=0,
                         breakpoints=[{"tensor": "big"}]) as dbg:
        p = dbg.wait_paused(timeout=20)
        assert p.reason == "breakpoint"
        grad = dbg.fetch(grad="big")
        assert grad.shape == (600, 600) and (grad == 2).all()
        assert dbg.trace.grad("big").array is None and dbg.trace.grad("big").summary.max == 2.0
        dbg.resume()


RAISING_SCRIPT = """
import gradviz.engine as torch
x = torch.ones(3, requires_grad=True)
y = (x * 2).exp()
def bad_hook(grad):
    raise ValueError("hook failed")
y.register_hook(bad_hook)
y.sum().backward()
"""


def test_exception_pauses_with_traceback_and_node(tmp_path):
    script = tmp_path / "raises.py"
    script.write_text(RAISING_SCRIPT)
    with Debugger.launch(script=script, args=["--flag"]) as dbg:
        p = dbg.wait_paused(timeout=20)
        assert p.reason == "exception" and "ValueError: hook failed" in p.traceback
        assert p.op == "ExpBackward0"  # the node whose hooks were running
        assert p.detail == "ValueError: hook failed"
        assert dbg.trace.nodes  # the trace up to that point is kept
        dbg.resume()
        end = dbg.wait_paused(timeout=20)
        assert end.reason == "exited" and end.exit_code == 1 and "hook failed" in end.traceback


def test_missing_script_is_a_clear_exit(tmp_path):
    with Debugger.launch(script=tmp_path / "nope.py") as dbg:
        p = dbg.wait_paused(timeout=20)
        assert p.reason == "exited" and p.exit_code == 2 and "no such script" in p.detail


def test_endless_loop_terminates_within_a_second(tmp_path):
    script = tmp_path / "spin.py"
    script.write_text("print('spinning', flush=True)\nwhile True:\n    pass\n")
    dbg = Debugger.launch(script=script)
    try:
        deadline = time.monotonic() + 20
        while "spinning" not in "".join(t for _, t in dbg.output) and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        dbg.terminate()
        assert time.monotonic() - t0 < 1.0
        assert dbg.proc.poll() is not None
        assert dbg.wait_paused(timeout=5).reason == "exited"
    finally:
        dbg.close()


LOOP_SCRIPT = """
import gradviz.engine as torch
w = torch.randn(20, 20, requires_grad=True)
for i in range(100000):
    loss = (torch.randn(8, 20) @ w).tanh().sum()
    loss.backward()
    w.grad = None
"""


def test_interrupt_pauses_a_running_program(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP_SCRIPT)
    with Debugger.launch(script=script, values="summaries") as dbg:
        deadline = time.monotonic() + 20
        while len(dbg.trace.passes) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        dbg.interrupt()
        p = dbg.wait_paused(timeout=20)
        assert p.reason == "interrupt" and p.op is not None
        dbg.terminate()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3, 0.8])
def test_sigkill_at_any_moment_keeps_the_trace(tmp_path, delay):
    script = tmp_path / "loop.py"
    script.write_text(LOOP_SCRIPT)
    with Debugger.launch(script=script) as dbg:
        time.sleep(delay)
        os.kill(dbg.proc.pid, signal.SIGKILL)
        p = dbg.wait_paused(timeout=20)
        assert p.reason == "exited" and p.exit_code == -signal.SIGKILL
        assert "killed by signal 9" in p.detail or "middle of an event" in p.detail
        t = dbg.trace
        # Every complete pass recorded before the kill is whole.
        for ps in t.passes[:-1]:
            assert ps.finished and len(ps.order) == 4


def test_a_connection_without_the_token_is_refused(tmp_path):
    server, address = protocol.listen(str(tmp_path))

    class Alive:
        pid = os.getpid()  # where SO_PEERCRED says where a connection comes from: here

        def poll(self):
            return None

        def kill(self):
            pass

    dbg = Debugger()
    dbg.proc = Alive()
    results = {}

    def intruder_then_child():
        bad = protocol.connect(address)
        protocol.send_message(bad, {"token": "guess", "pid": 1})
        results["bad"] = bad.recv(16)  # b"": closed on it
        good = protocol.connect(address)
        protocol.send_message(good, {"token": "right-token", "pid": 2})
        results["good"] = good

    t = threading.Thread(target=intruder_then_child)
    t.start()
    conn = dbg._accept(server, "right-token", timeout=10)
    t.join()
    assert results["bad"] == b"" and conn is not None
    protocol.send_message(conn, {"cmd": "hello"})
    assert protocol.recv_message(results["good"]) == {"cmd": "hello"}
    for s in (conn, results["good"], server):
        s.close()
    assert not hasattr(socket, "AF_UNIX") or address.startswith("unix:")


def test_no_child_outlives_its_debugger():
    with Debugger.launch(demo="seed", stop_on_entry=True) as dbg:
        dbg.wait_paused(timeout=20)
        assert dbg.proc in live_children()
    assert dbg.proc.returncode is not None and dbg.proc not in live_children()


def test_node_breakpoint_by_id():
    with Debugger.launch(demo="seed", stop_on_entry=True, break_on_forward=True) as dbg:
        assert dbg.wait_paused(timeout=20).reason == "entry"
        dbg.resume()
        made = dbg.wait_paused(timeout=20)  # the first node made: PowBackward0 of a
        assert made.op == "PowBackward0"
        dbg.add_breakpoint(node=made.node)
        dbg.configure(break_on_forward=False)  # stop forward stepping, keep the node breakpoint
        dbg.resume()
        p = dbg.wait_paused(timeout=20)
        assert (p.reason, p.node, p.op, p.grad_outputs[0].tolist()) == ("breakpoint", made.node, "PowBackward0",
                                                                         [3., 3.])
        dbg.resume()
        assert dbg.wait_paused(timeout=20).reason == "exited"


def test_line_breakpoint_holds_in_every_iteration(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text("import gradviz.engine as torch\n"
                      "w = torch.tensor([1., 2.], requires_grad=True)\n"
                      "for it in range(3):\n"
                      "    y = (w * (it + 1)).sum()\n"
                      "    y.backward()\n")
    with Debugger.launch(script=str(script), breakpoints=[{"source": "loop.py:4"}]) as dbg:
        seen = []
        while (p := dbg.wait_paused(timeout=20)).reason != "exited":
            assert p.reason == "breakpoint" and p.detail.endswith("made at loop.py:4")
            seen.append((p.pass_index, p.op, p.grad_outputs[0].tolist()))
            dbg.resume()
    assert seen == [(i, op, g) for i in range(3) for op, g in (("SumBackward0", 1.0), ("MulBackward0", [1.0, 1.0]))]
    with Debugger.launch(script=str(script), breakpoints=[{"source": f"{script}:5"}]) as dbg:
        assert dbg.wait_paused(timeout=20).reason == "exited"  # line 5 makes no node


def test_saved_tensors_of_the_paused_node():
    with Debugger.launch(demo="seed", break_on_backward=True) as dbg:
        seen = []
        while (p := dbg.wait_paused(timeout=20)).reason != "exited":
            seen.append((p.op, [(n, a.tolist()) for n, a in dbg.saved_tensors()]))
            dbg.step()
        with pytest.raises(DebuggerError, match="not paused|exited"):
            dbg.saved_tensors()
    # b**2 saved b; 3*a**3 saved the 3 (as PyTorch's _saved_other: a**3 needs no gradient of it); a**3 saved a,
    # each under PyTorch's name (grad_fn._saved_self, _saved_other)
    assert seen == [("SubBackward0", []), ("PowBackward0", [("self", [6.0, 4.0])]), ("AccumulateGrad", []),
                    ("MulBackward0", [("other", 3.0)]), ("PowBackward0", [("self", [2.0, 3.0])]),
                    ("AccumulateGrad", [])]


def test_anomaly_in_forward(tmp_path):
    script = tmp_path / "logzero.py"
    script.write_text("import gradviz.engine as torch\nx = torch.tensor([1., 0.], requires_grad=True)\n"
                      "y = x.log()\ny.sum().backward()\n")
    with Debugger.launch(script=script, breakpoints=[{"anomaly": True}]) as dbg:
        p = dbg.wait_paused(timeout=20)
        assert (p.reason, p.phase, p.op, p.source.line) == ("anomaly", "forward", "LogBackward0", 3)
        dbg.resume()
        # The backward pass is another pass: its first anomaly is LogBackward0's 1/0.
        p = dbg.wait_paused(timeout=20)
        assert (p.reason, p.phase, p.op) == ("anomaly", "backward-done", "LogBackward0")
        assert p.grad_inputs[0].tolist() == [1.0, float("inf")]
        dbg.resume()
        assert dbg.wait_paused(timeout=20).reason == "exited"


def test_launching_from_inside_a_gradviz_checkout(tmp_path):
    # A folder named gradviz/ in the program's folder must not shadow the installed package.
    (tmp_path / "gradviz").mkdir()
    (tmp_path / "gradviz" / "__init__.py").write_text("raise ImportError('the wrong gradviz')\n")
    script = tmp_path / "prog.py"
    script.write_text("import os\nprint('cwd', os.getcwd())\n")
    with Debugger.launch(script="prog.py", cwd=tmp_path) as dbg:
        p = dbg.wait_paused(timeout=20)
        assert p.reason == "exited" and p.exit_code == 0, p
        assert f"cwd {tmp_path}" in "".join(t for _, t in dbg.output)


def test_a_peer_breakpoint_needs_its_whole_signature():
    dbg = Debugger()
    with pytest.raises(ValueError, match=r"missing \['rank', 'scope'\]"):
        dbg.add_breakpoint(peer={"op": "MulBackward0", "source": "x.py:3"})
    bid = dbg.add_breakpoint(peer={"op": "MulBackward0", "scope": "", "source": "x.py:3", "rank": 1, "extra": 5})
    assert dbg.breakpoints[bid].peer == Peer(op="MulBackward0", scope="", source="x.py:3", rank=1)


def test_a_debugged_program_exits_as_it_would_alone(tmp_path):
    # its atexit handlers run after it ends (the session child once left with os._exit)
    done = tmp_path / "done.txt"
    script = tmp_path / "prog.py"
    script.write_text(f"""
import atexit, time
def bye():
    time.sleep(0.5)
    open({str(done)!r}, "w").write("flushed")
atexit.register(bye)
""")
    with Debugger.launch(script=script) as dbg:
        assert dbg.wait_paused(timeout=20).reason == "exited"
    deadline = time.monotonic() + 20
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert done.read_text() == "flushed"
