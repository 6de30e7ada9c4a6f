"""``gradviz serve``: the relay. It runs the program under the debugger on this machine, exactly as
``Debugger.launch`` does (its child process and local handshake), keeps every event the program
sends (numbered, in order, in a .gvz log), and relays one attached window at a time
(``Debugger.attach``, ``gradviz attach``): events to the window, commands to the program. The wire
is described in ``gradviz.debug.remote``; what a user sees of it in docs/remote.md.

Nothing is read from a connection before it has proved it holds the secret (a challenge-response
HMAC, each pending connection with its own deadline); what an attached window sends is checked
field by field and rebuilt before it reaches the program; a malformed message ends that
connection only.
"""
from __future__ import annotations

import json
import secrets
import selectors
import socket
import sys
import tempfile
import threading
import time
import typing

from gradviz import events as ev
from gradviz.debug import protocol, remote
from gradviz.debug.breakpoints import Breakpoint
from gradviz.debug.debugger import Debugger, DebuggerError, Pause
from gradviz.trace.gvz import encode_event, file_header

BATCH_BYTES = 256 << 10  # events per chunk, at most (one larger event goes alone)
COALESCE_S = 0.002  # a sender that wakes for a few small events waits this long for more
MAX_PENDING = 64  # connections in their handshake at once; the oldest gives way to a new one
DELIVER_TIMEOUT = 5.0  # after the program ended: how long the window may take to read the rest
_FETCH_KEYS = {"what": str, "index": int, "id": int, "name": str, "v": list}
_WHAT = {"tensor", "grad", "grad_output", "grad_input", "saved", "vjp"}


class _Window:
    def __init__(self, conn, have):
        self.conn, self.have = conn, have
        self.dropped = False
        self.delivered = threading.Event()  # the end of the stream was sent
        self.gone = threading.Event()  # its command reader ended

    def drop(self):
        self.dropped = True
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Relay(Debugger):
    """Start with ``Relay.launch(script=..., demo=..., stop_on_entry=True, ...)`` (as
    ``Debugger.launch``), then ``listen(host, port)`` and ``serve()``."""

    def __init__(self, values="full", budget_bytes=0, log_path=None):
        super().__init__(values=values, budget_bytes=0)  # it keeps no Trace: its log is the stream
        self._log = open(log_path, "w+b") if log_path else tempfile.TemporaryFile(prefix="gradviz-relay-")  # noqa: SIM115
        self._log.write(file_header())
        self._end_offset = self._log.tell()
        self._offsets: list[int] = []  # where each event's frame starts in the log
        self._cond = threading.Condition()
        self.paused_at: int | None = None  # the event number of the pause the program waits in
        self.pause_reason = ""
        self.released = False  # a window let the program go from its entry pause
        self._delivered_to: _Window | None = None  # the window the end of the stream was sent to
        self.ended: tuple[int | None, str] | None = None
        self.window: _Window | None = None
        self.on_detach = "pause"
        self.echo = None  # (stdout, stderr) to show the program's output on, or None
        self.compress = True  # zlib where it pays (bench/bench_remote.py)
        self.secret = remote.new_secret()
        self.address = ""
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._next_id = 1

    @classmethod
    def start(cls, script=None, args=(), demo=None, *, values="full", log_path=None, cwd=None, start_timeout=30.0):
        """Start ``script`` (with ``args``) or ``demo`` as ``Debugger.launch`` does, paused at its
        entry until a window attaches and lets it go; its stream is logged to ``log_path`` (a .gvz
        file; default: a temporary file)."""
        if (script is None) == (demo is None):
            raise ValueError("give either script=PATH or demo=NAME")
        relay = cls(values=values, log_path=log_path)
        try:
            relay._start(script, list(args), demo, cwd, start_timeout,
                         dict(stop_on_entry=True, break_on_backward=False, break_on_forward=False, breakpoints=[]))
        except BaseException:
            relay.close()
            raise
        return relay

    # -- the log ----------------------------------------------------------------------------------
    def _handle(self, e):
        frame = encode_event(e)
        resume = False
        with self._cond:
            self._log.seek(self._end_offset)
            self._log.write(frame)
            self._offsets.append(self._end_offset)
            self._end_offset += len(frame)
            if type(e) is ev.Paused:
                self.paused_at, self.pause_reason = len(self._offsets) - 1, e.reason
                resume = self.window is None and self.released and self.on_detach == "continue"
            self._cond.notify_all()
        if resume:
            self._command({"cmd": "resume"})

    def _on_output(self, name, text):
        if self.echo is not None:
            stream = self.echo[name == "stderr"]
            stream.write(text)
            stream.flush()
        self._handle(ev.ProgramOutput(name, text))

    def _post(self, pause):  # the program ended (its stream did): the windows are told
        assert isinstance(pause, Pause)
        with self._cond:
            self.ended = (pause.exit_code, pause.detail)
            self._cond.notify_all()

    @property
    def event_count(self):
        return len(self._offsets)

    def _read_log(self, start, stop):
        self._log.seek(start)
        return self._log.read(stop - start)

    def logged_bytes(self):
        """The whole stream so far, as a .gvz file's bytes."""
        with self._cond:
            self._log.flush()
            return self._read_log(0, self._end_offset)

    # -- listening --------------------------------------------------------------------------------
    def listen(self, host="127.0.0.1", port=0):
        """Listen on ``host``:``port`` (0: a free port); returns the address, ``"HOST:PORT"``."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((host, port))
        except OSError:
            server.close()
            raise
        server.listen(16)
        self._server = server
        self.address = remote.format_address(host, server.getsockname()[1])
        self._spawn(self._accept_loop)
        return self.address

    def _accept_loop(self):
        """Accepts connections and runs each one's handshake without blocking, each within its own
        deadline: a silent, slow or wrong one holds up nobody and is closed."""
        server = self._server
        assert server is not None
        server.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(server, selectors.EVENT_READ)
        pending: dict[socket.socket, list] = {}  # conn -> [nonce, bytes so far, deadline]

        def drop(conn):
            sel.unregister(conn)
            del pending[conn]
            conn.close()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for conn in [c for c, p in pending.items() if p[2] <= now]:
                    drop(conn)  # its deadline passed
                for key, _ in sel.select(timeout=0.1):
                    if key.fileobj is server:
                        try:
                            conn, _ = server.accept()
                        except OSError:
                            continue
                        if len(pending) >= MAX_PENDING:  # a flood: the oldest gives way
                            drop(min(pending, key=lambda c: pending[c][2]))
                        nonce = secrets.token_hex(16)
                        try:
                            conn.setblocking(False)
                            conn.send(remote.message({"gradviz": "relay", "version": remote.WIRE_VERSION,
                                                      "nonce": nonce}))
                        except OSError:
                            conn.close()
                            continue
                        pending[conn] = [nonce, b"", time.monotonic() + remote.HANDSHAKE_TIMEOUT]
                        sel.register(conn, selectors.EVENT_READ)
                        continue
                    conn = typing.cast(socket.socket, key.fileobj)
                    try:
                        data = conn.recv(remote.MAX_HELLO + 4)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    entry = pending[conn]
                    entry[1] += data
                    hello = remote.parse_hello(entry[1]) if data else False
                    if hello is None:
                        continue
                    nonce = entry[0]
                    sel.unregister(conn)
                    del pending[conn]
                    if hello is False:
                        conn.close()
                        continue
                    self._answer(conn, nonce, hello)
        finally:
            sel.close()
            for conn in pending:
                conn.close()

    def _answer(self, conn, nonce, hello):
        theirs, have = hello.get("nonce"), hello.get("have")
        good = (hello.get("version") == remote.WIRE_VERSION and isinstance(theirs, str) and len(theirs) <= 128
                and remote.verify(self.secret, "attach", nonce, theirs, hello.get("mac")))
        if not good:
            try:
                conn.send(remote.message({"ok": False, "error": "the relay refused the secret"}))
            except OSError:
                pass
            conn.close()
            return
        with self._cond:
            if type(have) is not int or not 0 <= have <= len(self._offsets):
                have = -1
            else:
                old, window = self.window, _Window(conn, have)
                self.window = window
                welcome = {"ok": True, "mac": remote.mac(self.secret, "relay", theirs, nonce),
                           "events": len(self._offsets), "paused_at": self.paused_at,
                           "paused_reason": self.pause_reason if self.paused_at is not None else None,
                           "at_entry": not self.released and self.ended is None,
                           "config": self._config()}
        if have < 0:
            conn.close()
            return
        if old is not None:  # one window at a time: the newest, authenticated, takes over
            old.drop()
        try:
            conn.setblocking(True)
            conn.settimeout(remote.HANDSHAKE_TIMEOUT)
            conn.sendall(remote.message(welcome))
            conn.settimeout(None)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            self._detach(window)
            return
        threading.Thread(target=self._send_events, args=(window,), daemon=True, name="gradviz-relay-send").start()
        threading.Thread(target=self._read_commands, args=(window,), daemon=True, name="gradviz-relay-read").start()

    def _config(self):
        return {"break_on_backward": self.break_on_backward, "break_on_forward": self.break_on_forward,
                "breakpoints": [bp.to_wire() for bp in self.breakpoints.values()],
                "next_id": max([self._next_id, *[i + 1 for i in self.breakpoints]])}

    # -- one window --------------------------------------------------------------------------------
    def _send_events(self, window: _Window):
        pos = window.have
        try:
            window.conn.sendall(remote.encode_chunk(remote.EVENTS, file_header()))
            while True:
                with self._cond:
                    while not window.dropped and pos >= len(self._offsets) and self.ended is None:
                        self._cond.wait(1.0)
                    if window.dropped:
                        return
                    small = pos < len(self._offsets) and self._end_offset - self._offsets[pos] < BATCH_BYTES
                if small:
                    time.sleep(COALESCE_S)  # the rest of a burst comes with it
                with self._cond:
                    n = len(self._offsets)
                    if pos < n:
                        start, stop = self._offsets[pos], self._end_offset
                        last = pos + 1
                        while last < n and self._offsets[last] - start < BATCH_BYTES:
                            last += 1
                        if last < n:
                            stop = self._offsets[last]
                        data, end = self._read_log(start, stop), None
                    else:
                        data, last, end = b"", pos, self.ended
                if data:
                    window.conn.sendall(remote.encode_chunk(remote.EVENTS, data, self.compress))
                    pos = last
                elif end is not None:
                    code, detail = end
                    window.conn.sendall(remote.encode_chunk(
                        remote.CONTROL, json.dumps({"ended": True, "exit_code": code, "detail": detail}).encode()))
                    window.delivered.set()
                    with self._cond:
                        self._delivered_to = window
                    window.conn.shutdown(socket.SHUT_WR)
                    return
        except OSError:
            self._detach(window)

    def _read_commands(self, window: _Window):
        try:
            while True:
                msg = protocol.recv_message(window.conn)
                cmd = _checked(msg)
                if cmd is None:
                    break  # malformed: this connection ends, nothing else
                self._command(cmd)
        except (OSError, EOFError, protocol.ProtocolError):
            pass
        finally:
            window.gone.set()
            self._detach(window)

    def _detach(self, window: _Window):
        with self._cond:
            if self.window is not window:
                window.drop()
                return
            self.window = None
            window.drop()
            self._cond.notify_all()
            # A program no window has let go yet waits at its entry, whatever --on-detach says.
            running, paused = self.ended is None and self.released, self.paused_at is not None
        if running and self.on_detach == "pause" and not paused:
            self._command({"cmd": "interrupt"})
        elif running and self.on_detach == "continue" and paused:
            self._command({"cmd": "resume"})
        try:
            window.conn.close()
        except OSError:
            pass

    def _command(self, cmd):
        """A checked command, on its way to the program; the relay keeps the switches and
        breakpoints it sets, to tell the next window."""
        c = cmd["cmd"]
        with self._cond:
            if c in ("step", "resume", "fetch"):
                if self.paused_at is None:
                    return  # it runs: a command for a pause that is over
                if c != "fetch":
                    self.paused_at, self.released = None, True
            elif c == "configure":
                self.break_on_backward = cmd.get("break_on_backward", self.break_on_backward)
                self.break_on_forward = cmd.get("break_on_forward", self.break_on_forward)
            elif c == "add_breakpoint":
                bp = Breakpoint.from_wire(cmd["spec"])
                self.breakpoints[bp.id] = bp
                self._next_id = max(self._next_id, (bp.id or 0) + 1)
            elif c == "remove_breakpoint":
                self.breakpoints.pop(cmd["id"], None)
        if c == "terminate":
            threading.Thread(target=self.terminate, daemon=True, name="gradviz-relay-terminate").start()
            return
        try:
            self._send(cmd)
        except DebuggerError:
            pass  # the program has ended: the windows hear it from the stream

    # -- serving -----------------------------------------------------------------------------------
    def serve(self, linger=60.0):
        """Relay until the program has ended and its end has reached a window (or, with no window
        attached, ``linger`` seconds have passed), or until ``stop()``. Returns the exit status."""
        waited_since = None
        while not self._stop.is_set():
            with self._cond:
                ended, window, delivered = self.ended, self.window, self._delivered_to
            if ended is not None:
                if delivered is not None:
                    delivered.gone.wait(DELIVER_TIMEOUT)  # until it has read everything and closed
                    break
                if window is None:
                    waited_since = waited_since or time.monotonic()
                    if time.monotonic() - waited_since >= linger:
                        break
                else:
                    waited_since = None
            self._stop.wait(0.05)
        code = self.ended[0] if self.ended is not None else None
        return code

    def stop(self):
        self._stop.set()

    def close(self):
        self._stop.set()
        if self._server is not None:
            self._server.close()
        with self._cond:
            window, self.window = self.window, None
            self._cond.notify_all()
        if window is not None:
            window.drop()
        super().close()
        self._log.close()


def _checked(msg):
    """The command rebuilt from checked fields, or None if it is malformed."""
    c = msg.get("cmd")
    try:
        if c in ("step", "resume", "interrupt", "terminate"):
            return {"cmd": c}
        if c == "configure":
            out = {"cmd": c}
            for k in ("break_on_backward", "break_on_forward"):
                if k in msg:
                    if type(msg[k]) is not bool:
                        return None
                    out[k] = msg[k]
            return out
        if c == "add_breakpoint":
            bp = Breakpoint.from_wire(msg.get("spec"))
            if type(bp.id) is not int:
                return None
            return {"cmd": c, "spec": bp.to_wire()}
        if c == "remove_breakpoint":
            return {"cmd": c, "id": msg["id"]} if type(msg.get("id")) is int else None
        if c == "fetch":
            if type(msg.get("request")) is not int or msg.get("what") not in _WHAT:
                return None
            out = {"cmd": c, "request": msg["request"]}
            for k, t in _FETCH_KEYS.items():
                if k in msg and msg[k] is not None:
                    if type(msg[k]) is not t:
                        return None
                    out[k] = msg[k]
            return out
    except (ValueError, TypeError, KeyError):
        return None
    return None


def serve_command(relay, stdout=sys.stdout, stderr=sys.stderr):
    """What ``gradviz serve`` prints once it listens."""
    print(f"gradviz serve: listening on {relay.address}", file=stderr)
    print(f"gradviz serve: secret {relay.secret}", file=stderr)
    print(f"gradviz serve: attach with: {remote.SECRET_ENV}={relay.secret} gradviz attach {relay.address}",
          file=stderr)
    stderr.flush()
