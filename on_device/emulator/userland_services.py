"""Device services over Android's real userland (sandbox.py): `shell:` v1/v2 (pipes, or a real PTY
for interactive shells and `-t`), `exec:`, `tcp:PORT` (a connection made inside the device's
network namespace: `adb forward`), `reverse:` (`adb reverse`: a listener inside the device's
network namespace whose connections are opened back to the host as `tcp:PORT` streams) and
`framebuffer:` (a blank frame of the profile's resolution). `sync:` stays the fs.py one."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import threading
from typing import Callable

from .services import (ID_CLOSE_STDIN, ID_EXIT, ID_STDERR, ID_STDIN, ID_STDOUT, ID_WINDOW_SIZE,
                       shell_exec_sync_service, shell_input, v2_packet)

log = logging.getLogger(__name__)


def find_userland_service(name: str) -> Callable | None:
    found = shell_exec_sync_service(name, shell_service)
    if found is not None:
        return found
    if name.startswith("tcp:"):
        rest = name[4:]
        host, _, port_text = rest.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            return None
        if not 0 < port < 65536:
            return None
        host = host or "127.0.0.1"
        return lambda stream, device: tcp_service(stream, device, host, port)
    if name.startswith("reverse:"):
        return lambda stream, device: reverse_service(stream, device, name[8:])
    if name in ("framebuffer:", "framebuffer"):
        return framebuffer_service
    return None


# ---- shell ---------------------------------------------------------------------------------------
def shell_service(stream, device, command: str, v2: bool, pty: bool, env: dict[str, str]) -> None:
    ul = device.userland
    sess = ul.spawn(command if command.strip() else None, pty=pty, env=env, merge_stderr=not v2)
    done = threading.Event()
    gone = threading.Event()

    def send(kind: int, data: bytes) -> None:
        if gone.is_set():
            return
        try:
            stream.write(v2_packet(kind, data) if v2 else data)
        except Exception:  # the host went away
            gone.set()
            sess.hangup()

    def pump_out() -> None:
        fds = {sess.out_fd: ID_STDOUT}
        if sess.err_fd >= 0:
            fds[sess.err_fd] = ID_STDERR
        while fds:
            ready, _, _ = select.select(list(fds), [], [], 0.02 if done.is_set() else 0.5)
            if not ready and done.is_set():
                return  # the shell exited and nothing more is there (a daemon may hold the pipe)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the pty's last holder closed it
                    data = b""
                if not data:
                    del fds[fd]
                else:
                    send(fds[fd], data)

    def pump_in() -> None:
        try:
            for kind, body in shell_input(stream, v2):
                if kind == ID_STDIN:
                    sess.write_stdin(body)
                elif kind == ID_CLOSE_STDIN:
                    sess.close_stdin()
                elif kind == ID_WINDOW_SIZE:
                    _resize(sess, body)
        except Exception:
            pass
        if stream.closed and not done.is_set():
            gone.set()
            sess.hangup()  # the host closed the stream: SIGHUP, as adbd sends
        elif not pty:
            sess.close_stdin()

    out_t = threading.Thread(target=pump_out, daemon=True, name=f"shell-out-{stream.local_id}")
    in_t = threading.Thread(target=pump_in, daemon=True, name=f"shell-in-{stream.local_id}")
    out_t.start()
    in_t.start()
    try:
        rc = sess.wait()
        done.set()
        out_t.join()
    finally:
        done.set()
        sess.close()
    if v2 and not gone.is_set():
        stream.write(v2_packet(ID_EXIT, bytes([rc & 0xFF])))
    log.info("shell %r -> %d", (command or "")[:200], rc)


def _resize(sess, body: bytes) -> None:
    # "ROWSxCOLS,XPIXxYPIX"
    try:
        text = body.split(b"\0", 1)[0].decode()
        a, _, b = text.partition(",")
        rows, cols = (int(x) for x in a.split("x"))
        xp, yp = (int(x) for x in b.split("x")) if b else (0, 0)
    except ValueError:
        return
    sess.resize(rows, cols, xp, yp)


# ---- tcp: / reverse: -----------------------------------------------------------------------------
def _splice(stream, sock: socket.socket) -> None:
    """Bytes both ways between an ADB stream and a socket until either side closes."""

    def to_host() -> None:
        try:
            while True:
                data = sock.recv(stream.max_payload)
                if not data:
                    break
                stream.write(data)
        except Exception:
            pass
        stream.close()

    t = threading.Thread(target=to_host, daemon=True, name=f"tcp-{stream.local_id}")
    t.start()
    try:
        while True:
            data = stream.read()
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    t.join(30)
    sock.close()


def tcp_service(stream, device, host: str, port: int) -> None:
    try:
        sock = device.userland.connect_tcp(port, host)
    except OSError as e:
        log.info("tcp:%s:%d refused in the device: %s", host, port, e)
        return  # the stream closes at once, as adbd closes it when connect() fails
    _splice(stream, sock)


def _adb_reply(ok: bool, text: str | None = None) -> bytes:
    out = b"OKAY" if ok else b"FAIL"
    if text is not None:
        data = text.encode()
        out += f"{len(data):04x}".encode() + data
    return out


def reverse_service(stream, device, request: str) -> None:
    rev = device.reverses
    conn = stream.conn
    if request.startswith("forward:"):
        spec = request[8:]
        norebind = spec.startswith("norebind:")
        if norebind:
            spec = spec[9:]
        local, _, remote = spec.partition(";")
        if not local.startswith("tcp:") or not remote.startswith("tcp:"):
            stream.write(_adb_reply(False, f"only tcp: reverses are supported, not {spec!r}"))
            return
        try:
            port = rev.add(conn, local, remote, norebind)
        except OSError as e:
            stream.write(_adb_reply(False, f"cannot bind listener: {e.strerror or e}"))
            return
        # adbd's handle_forward_request on a device: one status (the host adds its own first OKAY),
        # then the port it bound for tcp:0.
        stream.write(_adb_reply(True, str(port)) if local == "tcp:0" else b"OKAY")
    elif request == "list-forward":
        data = rev.listing(conn).encode()
        stream.write(f"{len(data):04x}".encode() + data)
    elif request.startswith("killforward:"):
        ok = rev.remove(conn, request[12:])
        stream.write(b"OKAY" if ok else _adb_reply(False, f"listener '{request[12:]}' not found"))
    elif request == "killforward-all":
        rev.remove_all(conn)
        stream.write(b"OKAY")
    else:
        stream.write(_adb_reply(False, f"unknown reverse request {request!r}"))


class Reverses:
    """`adb reverse` listeners of one emulator: device-side sockets (inside the device network
    namespace) per host connection; each accepted connection is opened back to that host."""

    def __init__(self, userland):
        self.userland = userland
        self._lock = threading.Lock()
        self._by_conn: dict[object, dict[str, tuple[socket.socket, str]]] = {}

    def add(self, conn, local: str, remote: str, norebind: bool) -> int:
        port = int(local[4:])
        with self._lock:
            mine = self._by_conn.setdefault(conn, {})
            if local in mine:
                if norebind:
                    raise OSError(errno.EADDRINUSE, "already reversed")
                mine[local] = (mine[local][0], remote)
                return port
        sock = self.userland.listen_tcp(port)
        port = sock.getsockname()[1]
        key = f"tcp:{port}" if local == "tcp:0" else local
        with self._lock:
            self._by_conn.setdefault(conn, {})[key] = (sock, remote)
        threading.Thread(target=self._accept, args=(conn, key, sock), daemon=True,
                         name=f"reverse-{key}").start()
        return port

    def _accept(self, conn, key: str, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            with self._lock:
                entry = self._by_conn.get(conn, {}).get(key)
            if entry is None or not conn.alive:
                client.close()
                return
            threading.Thread(target=self._relay, args=(conn, entry[1], client), daemon=True).start()

    @staticmethod
    def _relay(conn, remote: str, client: socket.socket) -> None:
        stream = conn.open_to_host(remote)
        if stream is None:
            client.close()
            return
        _splice(stream, client)

    def listing(self, conn) -> str:
        with self._lock:
            mine = dict(self._by_conn.get(conn, {}))
        return "".join(f"host {local} {remote}\n" for local, (_s, remote) in sorted(mine.items()))

    def remove(self, conn, local: str) -> bool:
        with self._lock:
            entry = self._by_conn.get(conn, {}).pop(local, None)
        if entry is None:
            return False
        entry[0].close()
        return True

    def remove_all(self, conn) -> None:
        with self._lock:
            mine = self._by_conn.pop(conn, {})
        for sock, _ in mine.values():
            sock.close()


# ---- framebuffer: ----------------------------------------------------------------------------------
def framebuffer_service(stream, device) -> None:
    """A blank RGBA frame in adbd's framebuffer protocol v1 (header of 13 u32, then the pixels)."""
    props = device.props
    try:
        w, h = (int(x) for x in props.get("ro.g4m.display.size", "1080x2340").split("x"))
    except ValueError:
        w, h = 1080, 2340
    size = w * h * 4
    stream.write(struct.pack("<13I", 1, 32, size, w, h, 0, 8, 16, 8, 8, 8, 24, 8))
    row = bytes(w * 4)
    chunk = row * max(1, stream.max_payload // len(row))
    left = size
    while left > 0:
        piece = chunk[:left]
        stream.write(piece)
        left -= len(piece)
