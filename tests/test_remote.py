"""Issue 17, section 2: remote attach. ``gradviz serve`` (the relay) and ``Debugger.attach`` /
``gradviz attach`` over 127.0.0.1, on the engine's demos (no torch). Each test ends every process
it starts."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from gradviz import events as ev
from gradviz.debug import remote
from gradviz.debug.debugger import Debugger, DebuggerError
from gradviz.debug.relay import Relay
from gradviz.trace.gvz import decode_bytes, encode_event

GRADVIZ = [sys.executable, "-m", "gradviz"]
LINUX = sys.platform.startswith("linux")


@pytest.fixture
def serve():
    """``serve(demo)``: a relay running ``demo`` in this process, listening on 127.0.0.1."""
    relays = []

    def start(demo="seed", on_detach="pause"):
        relay = Relay.start(demo=demo)
        relays.append(relay)
        relay.on_detach = on_detach
        relay.listen("127.0.0.1", 0)
        threading.Thread(target=relay.serve, kwargs={"linger": 0}, daemon=True).start()
        return relay
    yield start
    for relay in relays:
        relay.close()


def _pauses(dbg, first=None):
    """Step node by node to the end: each pause as (reason, phase, node, op, grad_outputs)."""
    out = []
    p = first or dbg.wait_paused(10)
    while p.reason != "exited":
        out.append((p.reason, p.phase, p.node, p.op, [g.tolist() for g in p.grad_outputs]))
        _retry(dbg.step)
        p = dbg.wait_paused(10)
    return out


def _retry(command, timeout=10.0):
    """A command, sent again while a dropped link is being made again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return command()
        except DebuggerError as exc:
            if "being made again" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


def _stream(events):
    """Events as the bytes the trace file holds: equal lists mean the very same stream."""
    return [encode_event(e) for e in events]


def test_stepping_over_attach_pauses_where_a_local_launch_does(serve):
    with Debugger.launch(demo="mlp", break_on_backward=True) as local:
        expected = _pauses(local)
    relay = serve("mlp")
    with Debugger.attach(relay.address, secret=relay.secret) as dbg:
        assert dbg.wait_paused(10).reason == "entry"  # serve's program waits for a window
        dbg.configure(break_on_backward=True)
        dbg.resume()
        assert _pauses(dbg) == expected
        assert len(expected) > 20
        assert dbg.state == "exited" and dbg.last_pause.exit_code == 0
        assert any("loss" in text for _, text in dbg.output)  # the program's output, read by the relay
        assert len(dbg.trace.passes) == len(local.trace.passes)


def test_attach_takes_switches_and_breakpoints_and_fetches_values(serve):
    relay = serve("seed")
    with Debugger.attach(relay.address, secret=relay.secret, stop_on_entry=False,
                         breakpoints=[{"tensor": "a"}]) as dbg:
        p = dbg.wait_paused(10)
        assert (p.reason, p.op) == ("breakpoint", "AccumulateGrad")
        np.testing.assert_array_equal(dbg.fetch(grad="a"), [36., 81.])
        assert dbg.saved_tensors() == []
        dbg.resume()
        assert dbg.wait_paused(10).reason == "exited"


def test_a_second_window_takes_over_with_the_programs_breakpoints(serve):
    relay = serve("seed")
    first = Debugger.attach(relay.address, secret=relay.secret)
    assert first.wait_paused(10).reason == "entry"
    bp = first.add_breakpoint(op="MulBackward0")
    _until(lambda: len(relay.breakpoints) == 1)  # the relay has read it
    first.close()  # detached: the program stays at its entry
    with Debugger.attach(relay.address, secret=relay.secret) as dbg:
        assert dbg.wait_paused(10).reason == "entry"  # the pause it waits in, once
        assert [b.condition() for b in dbg.breakpoints.values()] == [{"op": "MulBackward0"}]
        assert dbg.add_breakpoint(op="SubBackward0") > bp  # numbered after the program's own
        dbg.resume()
        assert dbg.wait_paused(10).op == "SubBackward0"
        dbg.resume()
        assert dbg.wait_paused(10).op == "MulBackward0"
        with pytest.raises(TimeoutError):  # no pause of the past comes again
            dbg.wait_paused(0.3)


def _raw_hello(address):
    host, port = remote.parse_address(address)
    s = socket.create_connection((host, port), timeout=5)
    return s, remote._recv_hello(s, time.monotonic() + 5)


def _closed_yet(s):
    """Whether the relay has closed ``s`` (a read of nothing), without waiting."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    finally:
        s.setblocking(True)


def _read_all(s, timeout=5.0):
    s.settimeout(timeout)
    out = b""
    while True:
        try:
            data = s.recv(65536)
        except TimeoutError:
            return out, False
        if not data:
            return out, True
        out += data


def test_a_wrong_secret_is_refused_and_gets_nothing(serve):
    relay = serve("seed")
    with pytest.raises(DebuggerError, match="refused the secret"):
        Debugger.attach(relay.address, secret="not-the-secret")
    # By hand: a well-formed answer with a wrong MAC gets the refusal and the end, no event.
    s, hello = _raw_hello(relay.address)
    assert set(hello) == {"gradviz", "version", "nonce"}
    s.sendall(remote.message({"version": 1, "nonce": "ab", "have": 0,
                              "mac": remote.mac("guess", "attach", hello["nonce"], "ab")}))
    rest, closed = _read_all(s)
    assert closed and json.loads(rest[4:]) == {"ok": False, "error": "the relay refused the secret"}
    s.close()
    # A recorded answer is worth nothing on the next connection (a fresh nonce).
    s, hello2 = _raw_hello(relay.address)
    assert hello2["nonce"] != hello["nonce"]
    s.sendall(remote.message({"version": 1, "nonce": "ab", "have": 0,
                              "mac": remote.mac(relay.secret, "attach", hello["nonce"], "ab")}))
    rest, closed = _read_all(s)
    assert closed and b"GVWB" not in rest and json.loads(rest[4:])["ok"] is False
    s.close()
    # Garbage, and a hello longer than the cap: closed at once, nothing sent.
    for junk in (b"\x05\x00\x00\x00{oops", b"\xff\xff\x00\x00" + b"x" * 100):
        s, _ = _raw_hello(relay.address)
        s.sendall(junk)
        rest, closed = _read_all(s)
        assert closed and rest == b""
        s.close()
    deadline = time.monotonic() + 10
    while relay.paused_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert relay.window is None and relay.pause_reason == "entry"  # nobody moved the program


def test_a_malformed_command_ends_that_connection_only(serve):
    relay = serve("seed")
    host, port = remote.parse_address(relay.address)
    for bad in ({"cmd": "add_breakpoint", "spec": {"op": 5, "id": 1}}, {"cmd": "exec", "code": "print(1)"},
                {"cmd": "fetch", "request": "x", "what": "tensor"}, {"cmd": "configure", "break_on_backward": "yes"}):
        s = socket.create_connection((host, port), timeout=5)
        remote.handshake(s, relay.secret, 0, 5)
        assert relay.window is not None
        s.sendall(remote.message(bad))
        _read_all(s)  # the relay's stream, then the end of this connection
        s.close()
    with Debugger.attach(relay.address, secret=relay.secret) as dbg:  # the program never saw them
        assert dbg.wait_paused(10).reason == "entry" and dbg.breakpoints == {}
        dbg.configure(break_on_backward=True)
        dbg.resume()
        assert dbg.wait_paused(10).op == "SubBackward0"


def test_a_corrupt_stream_from_a_relay_ends_the_session_with_why():
    server = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{server.getsockname()[1]}"

    def fake_relay():  # proves the secret, then sends a chunk whose checksum is wrong
        conn, _ = server.accept()
        conn.sendall(remote.message({"gradviz": "relay", "version": 1, "nonce": "n1"}))
        hello = remote._recv_hello(conn, time.monotonic() + 5)
        conn.sendall(remote.message({"ok": True, "mac": remote.mac("s", "relay", hello["nonce"], "n1"),
                                     "events": 0, "paused_at": None, "config": {}}))
        chunk = bytearray(remote.encode_chunk(remote.EVENTS, b"GRADVIZ\0\1\0\0\0", compress=False))
        chunk[-1] ^= 0xFF
        conn.sendall(bytes(chunk))
        _read_all(conn)  # until the window hangs up
        conn.close()
    t = threading.Thread(target=fake_relay, daemon=True)
    t.start()
    with Debugger.attach(address, secret="s") as dbg:
        p = dbg.wait_paused(10)
        assert p.reason == "exited"
        assert p.detail == ("the program's event stream was corrupt: "
                            "the relay's stream is corrupt (a chunk's checksum does not match)")
    t.join(5)
    server.close()


def test_silent_and_byte_by_byte_connections_block_no_attach(serve, monkeypatch):
    monkeypatch.setattr(remote, "HANDSHAKE_TIMEOUT", 4.0)
    relay = serve("seed")
    silent, _ = _raw_hello(relay.address)
    slow, hello = _raw_hello(relay.address)
    answer = remote.message({"version": 1, "nonce": "ab", "have": 0,
                             "mac": remote.mac(relay.secret, "attach", hello["nonce"], "ab")})
    stop = threading.Event()

    def trickle():  # the right answer, one byte at a time, too slowly to finish in time
        for b in answer:
            if stop.wait(0.1):
                return
            try:
                slow.send(bytes([b]))
            except OSError:
                return
    threading.Thread(target=trickle, daemon=True).start()
    try:
        with Debugger.attach(relay.address, secret=relay.secret, timeout=5) as dbg:
            # attached while both are still held open, before their deadlines: not after them (an
            # order, not a time: a loaded machine makes the attach itself slow, not blocked)
            assert not _closed_yet(silent) and not _closed_yet(slow)
            assert dbg.wait_paused(10).reason == "entry"
        # Each held its own deadline, and was closed when it passed: nothing is held open.
        for s in (silent, slow):
            rest, closed = _read_all(s, timeout=10)
            assert closed and rest == b""
    finally:
        stop.set()
        silent.close()
        slow.close()


def test_a_dropped_link_loses_no_event_and_repeats_none(serve):
    relay = serve("mlp")
    with Debugger.attach(relay.address, secret=relay.secret, stop_on_entry=False, break_on_backward=True) as dbg:
        ops = []
        for i in range(60):
            p = dbg.wait_paused(10)
            ops.append(p.op)
            if i % 7 == 3:
                dbg._link.drop()  # as a bad network would: the link is made again
            _retry(dbg.step)
        assert dbg.wait_paused(10).reason == "step"
        _retry(lambda: dbg.configure(break_on_backward=False))
        _retry(dbg.resume)
        while dbg.wait_paused(10).reason != "exited":
            _retry(dbg.resume)
        assert dbg._link.reconnects >= 5
        logged = decode_bytes(relay.logged_bytes())
        assert dbg._link.seen == len(logged)
        kept = [e for e in logged if type(e) not in (ev.Paused, ev.TensorValue)]
        assert _stream(dbg.trace.events) == _stream(kept)
        # Each node paused at once, in the order the pass ran them.
        order = [dbg.trace.nodes[n].op for p in dbg.trace.passes for n in p.order]
        assert ops == order[:len(ops)] and len(ops) == 60


def test_the_relay_sends_what_the_window_lacks_from_the_count_it_gives(serve):
    relay = serve("seed")
    with Debugger.attach(relay.address, secret=relay.secret, stop_on_entry=False) as dbg:
        assert dbg.wait_paused(10).reason == "exited"
    logged = decode_bytes(relay.logged_bytes())
    host, port = remote.parse_address(relay.address)
    for have in (0, 7, len(logged) - 1, len(logged)):
        s = socket.create_connection((host, port), timeout=5)
        welcome = remote.handshake(s, relay.secret, have, 5)
        assert welcome["events"] == len(logged) and welcome["paused_at"] is None
        raw, kinds = b"", []
        while not kinds or kinds[-1] != remote.CONTROL:
            kind, data = remote.read_chunk(s)
            kinds.append(kind)
            raw += data if kind == remote.EVENTS else b""
        assert json.loads(data) == {"ended": True, "exit_code": 0, "detail": ""}
        assert _stream(decode_bytes(raw)) == _stream(logged[have:])  # the rest, from the file header on
        s.close()


def test_a_link_dropped_while_events_flow_loses_none(serve):
    relay = serve("mlp", on_detach="continue")
    with Debugger.attach(relay.address, secret=relay.secret) as dbg:
        # Dropped once for sure (the demo may end within the first 50 ms once it runs), then as
        # often as it can be while the events flow.
        assert dbg.wait_paused(10).reason == "entry"
        dbg._link.drop()
        deadline = time.monotonic() + 10
        while dbg._link.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        dbg.resume()
        while dbg.state != "exited":
            time.sleep(0.05)
            dbg._link.drop()
        logged = decode_bytes(relay.logged_bytes())
        assert dbg._link.seen == len(logged) and dbg._link.reconnects >= 1
        kept = [e for e in logged if type(e) not in (ev.Paused, ev.TensorValue)]
        assert _stream(dbg.trace.events) == _stream(kept)
        assert dbg.last_pause.exit_code == 0


def test_a_dropped_link_leaves_the_program_paused(serve):
    relay = serve("mlp")  # --on-detach pause
    dbg = Debugger.attach(relay.address, secret=relay.secret, stop_on_entry=False)
    dbg._link.close()  # the window is gone while the program runs
    deadline = time.monotonic() + 10
    while relay.pause_reason != "interrupt" and relay.ended is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert relay.ended is None and relay.pause_reason == "interrupt" and relay.paused_at is not None
    with Debugger.attach(relay.address, secret=relay.secret) as again:
        p = again.wait_paused(10)
        assert p.reason == "interrupt" and again.state == "paused"
        again.terminate()
        assert again.wait_paused(10).reason == "exited"
    dbg.close()


def test_a_relay_gone_for_good_ends_the_session_with_why(serve):
    relay = serve("seed")
    dbg = Debugger.attach(relay.address, secret=relay.secret, reconnect_timeout=0.5)
    try:
        assert dbg.wait_paused(10).reason == "entry"
        relay.close()  # serve is gone (and the program with it)
        p = dbg.wait_paused(10)
        assert p.reason == "exited" and p.exit_code is None
        assert p.detail.startswith(f"the link to the relay at {relay.address} was lost")
        assert "attaching again failed: " in p.detail
        with pytest.raises(DebuggerError, match="the program is exited"):
            dbg.step()
    finally:
        dbg.close()


def test_on_detach_continue_lets_the_program_run_to_its_end(serve):
    relay = serve("mlp", on_detach="continue")
    dbg = Debugger.attach(relay.address, secret=relay.secret, stop_on_entry=False, break_on_backward=True)
    assert dbg.wait_paused(10).op == "NllLossBackward0"
    dbg.close()  # nobody watches: every pause (each backward node) is let go
    deadline = time.monotonic() + 20
    while relay.ended is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relay.ended == (0, "")
    with Debugger.attach(relay.address, secret=relay.secret) as late:  # the whole run, and its end
        p = late.wait_paused(10)
        assert p.reason == "exited" and p.exit_code == 0  # the first pause it gets: none of the past
        assert late.poll_pause() is None
        assert len(late.trace.passes) == 5 and late.break_on_backward  # all of the demo's passes


# -- the command line -------------------------------------------------------------------------------
def _start_serve(*args):
    proc = subprocess.Popen([*GRADVIZ, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [proc.stderr.readline()]
    while lines[-1] and not lines[-1].startswith("gradviz serve: attach with:"):
        lines.append(proc.stderr.readline())
    address = next(line for line in lines if " listening on " in line).split()[-1]
    secret = next(line for line in lines if " secret " in line).split()[-1]
    return proc, lines, address, secret


def _children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_cli_serve_prints_where_and_the_secret_and_attach_refuses_a_wrong_one():
    proc, lines, address, secret = _start_serve("--demo", "seed")
    try:
        assert lines[0] == f"gradviz serve: listening on {address}\n" and address.startswith("127.0.0.1:")
        assert lines[1] == f"gradviz serve: secret {secret}\n" and len(secret) >= 20
        assert lines[2] == f"gradviz serve: attach with: GRADVIZ_SECRET={secret} gradviz attach {address}\n"
        assert len(lines) == 3
        out = subprocess.run([*GRADVIZ, "attach", address, "--secret", "wrong"], capture_output=True, text=True,
                             timeout=30, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
        assert out.returncode == 1
        assert out.stderr == f"gradviz attach: {address}: the relay refused the secret\n"
        with Debugger.attach(address, secret=secret, stop_on_entry=False) as dbg:
            assert dbg.wait_paused(10).reason == "exited"
            assert dbg.trace.grad("a").array.tolist() == [36., 81.]
        assert proc.wait(timeout=10) == 0  # the program ended and its end reached the window
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_serve_refuses_what_it_cannot_do():
    out = subprocess.run([*GRADVIZ, "serve", "--listen", "nowhere", "--demo", "seed"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "expected HOST:PORT" in out.stderr
    out = subprocess.run([*GRADVIZ, "attach", "127.0.0.1:1", "--secret", "x"], capture_output=True,
                         text=True, timeout=30, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert out.returncode == 1 and out.stderr.startswith("gradviz attach: cannot reach a gradviz relay at 127.0.0.1:1")
    assert out.stderr.count("\n") == 1


@pytest.mark.skipif(not LINUX, reason="finds the program's process in /proc")
def test_cli_serve_ends_cleanly_on_sigterm():
    proc, lines, address, secret = _start_serve("--listen", "0.0.0.0:0", "--demo", "seed")
    try:
        # Off loopback only when asked, and then with a warning first.
        assert lines[0].startswith(f"gradviz serve: warning: {address} can be reached from other machines")
        assert address.startswith("0.0.0.0:") and "SSH tunnel" in lines[0]
        deadline = time.monotonic() + 10
        while not _children_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = _children_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        assert "stopped; the program was ended" in proc.stderr.read()
        assert not _alive(child)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_a_second_window_lists_the_breakpoints_the_first_one_set(serve):
    from gradviz.app.state import AppState
    relay = serve("seed")
    with Debugger.attach(relay.address, secret=relay.secret) as first:
        first.add_breakpoint(tensor="a")
        first.add_breakpoint(peer={"op": "PowBackward0", "scope": "", "source": "/x/seed.py:9", "rank": 1})
        first.add_breakpoint(anomaly=True)
        _until(lambda: len(relay.breakpoints) == 3)  # the relay has read them
    dbg = Debugger.attach(relay.address, secret=relay.secret)
    try:
        state = AppState(debugger=dbg)
        assert state.book.rows() == [(1, "a.grad accumulated"), (2, "PowBackward0 · seed.py:9, every iteration"),
                                     (3, "anomaly: NaN or Inf anywhere")]
        assert state.anomaly_on
    finally:
        dbg.close()


def test_the_app_opens_on_an_attached_debugger(serve, qtbot):
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow
    relay = serve("seed")
    dbg = Debugger.attach(relay.address, secret=relay.secret, stop_on_entry=False, break_on_backward=True)
    state = AppState(debugger=dbg)
    w = MainWindow(state, f"gradviz — attached to {relay.address}")
    qtbot.addWidget(w)
    w.show()
    try:
        qtbot.waitUntil(lambda: (w.poll(), state.pause is not None)[1], timeout=10000)
        assert state.pause.op == "SubBackward0" and state.current == f"n{state.pause.node}"
        state.step()
        qtbot.waitUntil(lambda: (w.poll(), state.pause.op == "PowBackward0")[1], timeout=10000)
        assert w.windowTitle() == f"gradviz — attached to {relay.address}"
        assert state.status_text().endswith(f"paused (step) at PowBackward0 (seed.py:9) · attached to {relay.address}")
        assert not w.actions_by_name["Restart"].isEnabled()  # serve started it; only serve can
        dbg._link.down = True  # what the status line says while a dropped link is made again
        assert state.status_text().endswith(f" · link to {relay.address} lost: attaching again")
        dbg._link.down = False
        assert w.actions_by_name["Step"].isEnabled()
    finally:
        w.timer.stop()
        dbg.terminate()
        dbg.close()
