"""The debugger session's wire: where the parent listens, how the child proves it was launched by
it, and the commands the parent sends. The child's side of the stream is the trace-file format
itself (``gradviz.trace.gvz``); commands are small length-prefixed JSON messages. A breakpoint
travels in them as ``Breakpoint.to_wire()``'s object (``gradviz.debug.breakpoints``), read back
with ``Breakpoint.from_wire``: ``{"cmd": "add_breakpoint", "spec": ...}`` and the ``configure``
message's ``breakpoints`` list."""
from __future__ import annotations

import json
import os
import socket
import struct

TOKEN_ENV = "GRADVIZ_SESSION_TOKEN"
MAX_MESSAGE = 1 << 20
_LEN = struct.Struct("<I")


class ProtocolError(ConnectionError):
    pass


def listen(directory):
    """A listening socket only this machine can reach: a Unix socket in a private directory where
    the platform has them, else loopback TCP. Returns (socket, address string for the child)."""
    if hasattr(socket, "AF_UNIX"):
        path = os.path.join(directory, "session.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        os.chmod(path, 0o600)
        s.listen(4)
        return s, "unix:" + path
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    return s, f"tcp:127.0.0.1:{s.getsockname()[1]}"


def connect(address):
    kind, _, rest = address.partition(":")
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(rest)
        return s
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"a gradviz session connects over loopback only, not to {host!r}")
        return socket.create_connection((host, int(port)))
    raise ValueError(f"unknown session address {address!r}")


def send_message(sock, obj):
    data = json.dumps(obj, separators=(",", ":")).encode()
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_message(sock):
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if n > MAX_MESSAGE:
        raise ProtocolError(f"message of {n} bytes is over the limit of {MAX_MESSAGE}")
    try:
        obj = json.loads(_recv_exact(sock, n).decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    if type(obj) is not dict:
        raise ProtocolError("a message must be a JSON object")
    return obj
