"""Issue 13: every failure is one clear line, leaves nothing running, and never hangs. Each test is
bounded in time and ends every process it starts."""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import gradviz
from gradviz import events as ev
from gradviz.debug import protocol
from gradviz.debug.debugger import Debugger, DebuggerError

GRADVIZ = [sys.executable, "-m", "gradviz"]
LINUX = sys.platform.startswith("linux")


def _alive(pid):
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by init, counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return not LINUX


def _wait_for(cond, timeout):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _read_pid(path, timeout=15.0):
    assert _wait_for(lambda: path.exists() and path.read_text().strip().isdigit(), timeout), "the program never started"
    return int(path.read_text())


def _end(*pids):
    for pid in pids:
        if pid and _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _one_line_error(out):
    err = out.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


# -- 1. the recording child dies with `gradviz record` -----------------------------------------------
# After writing its pid the program sits in one long C call that holds the GIL (sum over a huge
# range): only the kernel can end it there.
SPIN_IN_C = """
import os, sys
import gradviz.engine as torch
w = torch.tensor([1.], requires_grad=True)
(w * 2).sum().backward()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
sum(range(10 ** 13))
"""


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_recording_child_dies_with_gradviz_record(tmp_path, sig):
    prog, pidfile = tmp_path / "spin.py", tmp_path / "pid"
    prog.write_text(SPIN_IN_C)
    proc = subprocess.Popen(GRADVIZ + ["record", str(prog), str(pidfile), "-o", str(tmp_path / "t.gvz")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = None
    try:
        child = _read_pid(pidfile)
        proc.send_signal(sig)
        proc.wait(timeout=5)
        assert _wait_for(lambda: not _alive(child), 5), "the recording child outlived gradviz record"
    finally:
        _end(child)
        proc.kill()
        proc.wait()


SPIN_IN_PYTHON = """
import os, sys, time
import gradviz.engine as torch
w = torch.tensor([1.], requires_grad=True)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    (w * 2).sum().backward()
    time.sleep(0.01)
"""


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs process groups")
def test_ctrl_c_on_gradviz_record_stops_both_in_one_line(tmp_path):
    prog, pidfile, out = tmp_path / "spin.py", tmp_path / "pid", tmp_path / "t.gvz"
    prog.write_text(SPIN_IN_PYTHON)
    # Its own group, as a terminal's foreground job: Ctrl-C goes to gradviz and the program alike.
    proc = subprocess.Popen(GRADVIZ + ["record", str(prog), str(pidfile), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    child = None
    try:
        child = _read_pid(pidfile)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode != 0
        assert "Traceback" not in err, err
        assert "interrupted" in err or "KeyboardInterrupt" in err
        assert _wait_for(lambda: not _alive(child), 5)
        assert gradviz.load(out, partial=True).passes  # what was recorded is kept
    finally:
        _end(child)
        proc.kill()
        proc.wait()


# -- 2. terminate() ends what the program started ---------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs process groups")
def test_terminate_ends_the_programs_own_subprocesses(tmp_path):
    prog, pidfile = tmp_path / "spawn.py", tmp_path / "pid"
    prog.write_text("import subprocess, sys, time\n"
                    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
                    "open(sys.argv[1] + '.tmp', 'w').write(str(p.pid))\n"
                    "import os; os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
                    "time.sleep(300)\n")
    grandchild = None
    with Debugger.launch(script=str(prog), args=[str(pidfile)]) as dbg:
        try:
            grandchild = _read_pid(pidfile)
            dbg.terminate()
            assert _wait_for(lambda: not _alive(grandchild), 5), "the program's subprocess outlived it"
        finally:
            _end(grandchild)


# -- 3. a screenshot always ends the command -----------------------------------------------------------
def test_a_screenshot_of_a_program_that_never_pauses_is_taken_after_the_time_out(tmp_path):
    prog, png = tmp_path / "spin.py", tmp_path / "s.png"
    prog.write_text("import time\nwhile True:\n    time.sleep(0.05)\n")
    t0 = time.monotonic()
    out = subprocess.run(GRADVIZ + ["run", "--screenshot", str(png), "--screenshot-after", "1.5", str(prog)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert png.stat().st_size > 0
    assert time.monotonic() - t0 < 30


def test_the_top_level_screenshot_option_works_with_run(tmp_path):
    png = tmp_path / "g.png"
    out = subprocess.run(GRADVIZ + ["--screenshot", str(png), "--screenshot-after", "5", "run", "--demo", "seed"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert png.stat().st_size > 0


def test_the_screenshot_option_is_refused_where_there_is_no_window(tmp_path):
    out = subprocess.run(GRADVIZ + ["--screenshot", str(tmp_path / "g.png"), "info", str(tmp_path / "t.gvz")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "--screenshot is for the app" in _one_line_error(out)


# -- 4. an inconsistent live event ends the session cleanly ---------------------------------------------
def test_an_inconsistent_live_event_ends_the_session_as_exited_with_the_reason(tmp_path):
    prog = tmp_path / "bad_event.py"
    # The program reaches into the session and sends a NodeEntered for a pass that never started.
    prog.write_text("import gc, time\n"
                    "from gradviz import events as ev\n"
                    "s = next(o for o in gc.get_objects() if type(o).__name__ == 'Session')\n"
                    "s.emit(ev.NodeEntered(pass_index=7, node=12345))\n"
                    "time.sleep(300)\n")
    with Debugger.launch(script=str(prog)) as dbg:
        p = dbg.wait_paused(timeout=15)
        assert p.reason == "exited"
        assert "consistent" in p.detail
        assert dbg.proc.poll() is not None


# -- 5. the launch handshake ----------------------------------------------------------------------------
class _Child:
    """Stands for the launched child: alive, with this process's pid (what SO_PEERCRED will say
    of a connection made from here)."""

    def __init__(self, pid=None):
        self.pid = os.getpid() if pid is None else pid

    def poll(self):
        return None

    def kill(self):
        pass


def _frame(obj_bytes):
    return struct.pack("<I", len(obj_bytes)) + obj_bytes


def _handshake(tmp_path, attackers, pid=None, timeout=5.0, good_after=0.3):
    """Run the parent's accept against ``attackers`` (each a function given a connected socket)
    and then the real child's hello; returns (the accepted connection or None, seconds taken)."""
    server, address = protocol.listen(str(tmp_path))
    token = "ab" * 32
    dbg = Debugger()
    dbg.proc = _Child(pid)
    socks, threads = [], []

    def attack(fn):
        s = protocol.connect(address)
        socks.append(s)
        try:
            fn(s)
        except OSError:
            pass

    done = threading.Event()

    def good():
        if done.wait(good_after):
            return
        try:
            s = protocol.connect(address)
            socks.append(s)
            protocol.send_message(s, {"token": token, "pid": os.getpid()})
        except OSError:
            pass

    for fn in attackers:
        threads.append(threading.Thread(target=attack, args=(fn,), daemon=True))
    threads.append(threading.Thread(target=good, daemon=True))
    for t in threads:
        t.start()
    t0 = time.monotonic()
    try:
        conn = dbg._accept(server, token, timeout)
        took = time.monotonic() - t0
        if conn is not None:
            conn.close()
        return conn, took
    finally:
        done.set()
        server.close()
        for s in socks:
            s.close()
        for t in threads:
            t.join(timeout=2)


def _drip(s):
    data = _frame(json.dumps({"token": "x" * 64}).encode())
    for b in data:
        s.sendall(bytes([b]))
        time.sleep(0.5)


def test_malformed_slow_and_silent_hellos_are_refused_and_the_child_still_gets_in(tmp_path):
    nested = _frame(b"[" * 100000 + b"]" * 100000)
    attackers = [
        _drip,  # one byte every half second
        lambda s: s.sendall(_frame(json.dumps({"token": "\u00e9" * 64}).encode())),  # a non-ASCII token
        lambda s: s.sendall(nested),  # JSON nested past the recursion limit (and over the size limit)
        lambda s: s.sendall(_frame(b'{"token": ' + b"[" * 2000 + b"]" * 2000 + b"}")),  # deep but small
        lambda s: s.sendall(_frame(b"\xff\xfe not json")),
        lambda s: s.sendall(struct.pack("<I", 1 << 30)),  # claims a gigabyte
        lambda s: s.sendall(_frame(b"[1, 2]")),
    ] + [lambda s: time.sleep(1)] * 7  # seven silent connections
    conn, took = _handshake(tmp_path, attackers)
    assert conn is not None
    assert took < 3


def test_a_hello_dripped_byte_by_byte_cannot_hold_the_launch_past_its_deadline(tmp_path):
    conn, took = _handshake(tmp_path, [_drip], timeout=1.0, good_after=30)
    assert conn is None
    assert took < 2


@pytest.mark.skipif(not (LINUX and hasattr(socket, "SO_PEERCRED")), reason="SO_PEERCRED is Linux's")
def test_the_right_token_from_another_process_is_refused(tmp_path):
    conn, _ = _handshake(tmp_path, [], pid=1, timeout=1.0)
    assert conn is None


def test_a_launch_that_never_connects_says_so(tmp_path):
    prog = tmp_path / "slow.py"
    prog.write_text("x = 1\n")
    with pytest.raises(DebuggerError, match="did not connect within"):
        # a start time-out too short for any interpreter to start in
        Debugger.launch(script=str(prog), start_timeout=0.001)


# -- 7. one line and a non-zero exit, checked before the program runs ----------------------------------
def test_unwritable_outputs_and_unreadable_inputs_are_one_line(tmp_path):
    trace = tmp_path / "t.gvz"
    from gradviz.trace.gvz import write_trace
    write_trace(trace, [ev.NodeCreated(1, "SumBackward0", "grad_fn", 0, (), None, ())])
    cases = [
        (["record", "--demo", "mlp", "-o", "/nonexistent/x.gvz"], "no such folder"),
        (["export", str(trace), "-o", "/nonexistent/x.dot"], "no such folder"),
        (["info", str(tmp_path)], "is a directory"),
        (["open", str(trace), "--screenshot", "/nonexistent/x.png"], "no such folder"),
        (["open", str(trace), "--screenshot", str(tmp_path / "x.foo")], "cannot save a screenshot as .foo"),
    ]
    for argv, said in cases:
        out = subprocess.run(GRADVIZ + argv, capture_output=True, text=True, timeout=30)
        assert out.returncode != 0, argv
        assert said in _one_line_error(out), argv
    assert not (tmp_path / "x.foo").exists()


# -- 8. a torch demo without torch ----------------------------------------------------------------------
def test_a_torch_demo_without_torch_says_so_up_front(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from gradviz.cli import main\n"
            f"sys.exit(main(['record', '--demo', 'torch-mlp', '-o', {str(tmp_path / 't.gvz')!r}]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "needs PyTorch: pip install torch" in _one_line_error(out)
    assert not (tmp_path / "t.gvz").exists()


# -- 9. a frame that claims more than can be --------------------------------------------------------------
def test_a_sparse_file_claiming_a_10_gib_frame_fails_before_allocating(tmp_path):
    from gradviz.trace.gvz import FRAME_MAGIC, TraceFormatError, file_header
    path = tmp_path / "huge.gvz"
    meta = b'{"type":"NodeCreated"}'
    from gradviz.trace import gvz
    code = next(iter(gvz._DTYPES))
    shape = struct.pack("<1Q", 10 * 2**30 // np.dtype(gvz._DTYPES[code]).itemsize)  # 10 GiB
    frame = FRAME_MAGIC + struct.pack("<III", len(meta), 1, 0) + meta + bytes([code, 1]) + shape
    with open(path, "wb") as f:
        f.write(file_header() + frame)
        f.truncate(11 * 2**30)  # sparse: the file claims the bytes it does not hold
    t0 = time.monotonic()
    with pytest.raises(TraceFormatError, match="limit"):
        gradviz.load(path)
    assert time.monotonic() - t0 < 2
    out = subprocess.run(GRADVIZ + ["info", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "not a valid trace" in _one_line_error(out)


def test_info_on_a_node_only_named_as_a_next_node(tmp_path):
    from gradviz.trace.gvz import write_trace
    path = tmp_path / "t.gvz"
    write_trace(path, [ev.NodeCreated(1, "SumBackward0", "grad_fn", 0, (), None, (99,))])
    out = subprocess.run(GRADVIZ + ["info", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "2 nodes" in out.stdout


# -- 14. what a newcomer hits first -------------------------------------------------------------------------
def _no_display_env():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    return env


@pytest.mark.skipif(not LINUX, reason="the display check is for Linux")
def test_no_display_says_how_to_run_headless():
    out = subprocess.run(GRADVIZ, capture_output=True, text=True, timeout=30, env=_no_display_env())
    assert out.returncode == 2
    assert "QT_QPA_PLATFORM=offscreen" in _one_line_error(out) and "--screenshot" in out.stderr


def test_a_screenshot_of_a_missing_script_fails(tmp_path):
    png = tmp_path / "x.png"
    out = subprocess.run(GRADVIZ + ["run", "--screenshot", str(png), str(tmp_path / "missing.py")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "no such script" in _one_line_error(out)


def test_a_screenshot_of_a_failing_program_exits_non_zero(tmp_path):
    prog, png = tmp_path / "fail.py", tmp_path / "x.png"
    prog.write_text("import sys\nsys.exit(3)\n")
    out = subprocess.run(GRADVIZ + ["run", "--screenshot", str(png), str(prog)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr


def test_after_an_exception_only_stop_and_restart_are_offered(qtbot, tmp_path):
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow
    prog = tmp_path / "bad.py"
    prog.write_text("import gradviz.engine as torch\n"
                    "w = torch.tensor([1., 2.], requires_grad=True)\n"
                    "w.register_hook(lambda g: 1 / 0)\n"
                    "(w * 3).sum().backward()\n")
    w = MainWindow(AppState(launch=lambda breakpoints=(), **kw: Debugger.launch(script=str(prog), **kw)))
    qtbot.addWidget(w)
    try:
        st = w.state
        qtbot.waitUntil(lambda: (w.poll(), st.pause is not None and st.pause.reason == "exception")[1],
                        timeout=20000)
        w.poll()
        acts = w.actions_by_name
        assert not acts["Step"].isEnabled() and not acts["Continue"].isEnabled()
        assert acts["Stop"].isEnabled() and acts["Restart"].isEnabled()
    finally:
        w.timer.stop()
        w.state.close()


# -- 6. a trace naming a device or a FIFO as its source file -------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_the_inspector_reads_no_source_line_from_a_device_or_a_fifo(tmp_path):
    from gradviz.trace.gvz import write_trace
    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    good = tmp_path / "model.py"
    good.write_text("x = 1\ny = x * 2  # the line\n")
    path = tmp_path / "t.gvz"
    write_trace(path, [ev.NodeCreated(i, "MulBackward0", "grad_fn", 0, (), None, (), source=ev.Source(f, 2, "f"))
                       for i, f in enumerate(["/dev/zero", str(fifo), str(good)], 1)])
    code = ("import sys\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication([])\n"
            "from gradviz.app.state import AppState\n"
            "from gradviz.trace.files import load\n"
            "from gradviz.ui.inspector import Inspector\n"
            f"ins = Inspector(AppState(trace=load({str(path)!r})))\n"
            "for key in ('n1', 'n2', 'n3'):\n"
            "    ins.show_key(key)\n"
            "    print(key, '# the line' in ins.toPlainText())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                         env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n1", "False", "n2", "False", "n3", "True"]


# -- 11. interrupting a program that runs no autograd operations ---------------------------------------
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="pauses at graph operations only here")
@pytest.mark.parametrize("body", ["time.sleep(0.05)", "x = sum(range(1000))"], ids=["sleeping", "spinning"])
def test_interrupt_pauses_a_program_without_autograd(tmp_path, body):
    prog = tmp_path / "spin.py"
    prog.write_text(f"import time\nwhile True:\n    {body}\n")
    with Debugger.launch(script=str(prog)) as dbg:
        for _ in range(2):  # and again after resuming
            time.sleep(0.2)
            dbg.interrupt()
            p = dbg.wait_paused(timeout=5)
            assert p.reason == "interrupt" and p.node is None
            assert f"{prog}:2" in p.detail or f"{prog}:3" in p.detail
            dbg.resume()


# -- 10. gradviz record's summary without loading the trace again ---------------------------------------
def test_record_counts_its_trace_without_loading_it(tmp_path, monkeypatch, capfd):
    from gradviz import cli
    from gradviz.trace import files
    from gradviz.trace.gvz import count_events, read_events

    def no_load(*a, **kw):
        raise AssertionError("gradviz record loaded the whole trace again")
    monkeypatch.setattr(files, "load", no_load)
    out = tmp_path / "t.gvz"
    assert cli.main(["record", "--demo", "mlp", "-o", str(out)]) == 0
    events = read_events(out)
    types = {}
    for e in events:
        types[type(e).__name__] = types.get(type(e).__name__, 0) + 1
    assert count_events(out) == types
    err = capfd.readouterr().err
    assert (f"recorded {len(events)} events ({types['NodeCreated']} autograd nodes, "
            f"{types['BackwardStarted']} backward passes)") in err  # (the mlp demo runs several)
    data = out.read_bytes()
    cut = tmp_path / "cut.gvz"
    cut.write_bytes(data[:data.rindex(b"GVEV") + 7])  # the last event's frame cut (array and note frames follow it)
    assert sum(count_events(cut).values()) == len(events) - 1


def test_record_says_when_the_program_was_killed(tmp_path):
    prog, pidfile, out = tmp_path / "spin.py", tmp_path / "pid", tmp_path / "t.gvz"
    prog.write_text(SPIN_IN_PYTHON)
    proc = subprocess.Popen(GRADVIZ + ["record", str(prog), str(pidfile), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    child = None
    try:
        child = _read_pid(pidfile)
        time.sleep(0.2)
        os.kill(child, signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 128 + 9
        n = len(gradviz.load(out, partial=True).events)
        assert f"the program was killed by signal 9; the trace holds {n} events up to then" in err
    finally:
        _end(child)
        proc.kill()
        proc.wait()


# -- 13. a long run's history is out of the garbage collector's full passes ----------------------------
def test_a_long_live_run_freezes_its_history_for_the_garbage_collector():
    import gc

    from gradviz.app import state as app_state
    from gradviz.trace.model import Trace

    class Live:  # what poll reads of a Debugger that streams and never pauses
        def __init__(self):
            self.trace = Trace()
            self.state = "running"
            self.lock = threading.RLock()

        def poll_pause(self):
            return None

    dbg = Live()
    st = app_state.AppState(debugger=dbg)
    gc.unfreeze()
    try:
        st.poll()
        assert gc.get_freeze_count() == 0  # a short run: nothing frozen
        dbg.trace.events.extend([None] * app_state.FREEZE_EVERY)  # as if that many had streamed in
        st.poll()
        assert gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        st.poll()
        assert gc.get_freeze_count() == frozen  # not again until FREEZE_EVERY more
    finally:
        gc.unfreeze()
