"""The device side of ADB over TCP: handshake (CNXN, optional RSA AUTH), streams (OPEN, OKAY,
WRTE, CLSE) with flow control, many clients and many streams per client, each service in a thread.

A connection that sends anything that is not ADB is logged and dropped; the others keep going.
"""

from __future__ import annotations

import collections
import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


from gemma4_common.config import state_dir

from . import protocol as P
from .auth import AuthorizedKeys, new_token, parse_android_pubkey
from .fs import SandboxFS, check_root
from .sandbox import DeviceUserland, Storage, _sweep_stale, check_available
from .userland_services import Reverses, find_userland_service
from .context import RunnerContext
from .profiles import DeviceProfile

log = logging.getLogger("on_device.emulator")

# Features advertised in the banner: only what services.py implements.
FEATURES = ("shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir")
# A local adb server claims these ports as emulator consoles; never listen on them.
ADB_EMULATOR_PORTS = range(5554, 5586)
MAX_INBOX_PACKETS = 64


def free_port(host: str = "127.0.0.1") -> int:
    """A free port on `host` outside ADB_EMULATOR_PORTS (for an adb server, say, or a second emulator)."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in ADB_EMULATOR_PORTS:
            return port


@dataclass
class EmulatorConfig:
    profile: DeviceProfile
    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    auth: bool = False
    authorized_keys: Path | None = None
    accept_new_keys: bool = False
    storage_bytes: int | None = None
    max_connections: int = 64
    max_streams_per_connection: int = 256
    # How long a connection may take to become online (handshake, or an unaccepted key's wait).
    handshake_timeout_s: float = 20.0
    # How long the rest of a packet may take once its header arrived.
    packet_timeout_s: float = 60.0
    features: tuple[str, ...] = FEATURES
    # The link to the host, in MB/s (10^6 bytes), both directions and all connections together (a
    # phone has one cable): None for loopback speed. A USB 2 phone moves ~40 MB/s over adb, USB 3
    # a few hundred; with a link this slow the host's CPU is no longer what limits a transfer.
    link_mb_s: float | None = None


class Link:
    """A link of a fixed rate shared by every connection: each packet, received or sent, takes its
    time on it (a packet received is read from the socket at once, so TCP's window holds the sender
    back while the link is busy, as a cable would). A short burst goes through without waiting."""

    BURST_S = 0.005

    def __init__(self, bytes_per_s: float):
        if not bytes_per_s > 0:
            raise ValueError("a link's rate must be positive")
        self.rate = float(bytes_per_s)
        self._free_at = time.monotonic()
        self._lock = threading.Lock()

    def carry(self, nbytes: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + nbytes / self.rate
            wait = self._free_at - now - self.BURST_S
        if wait > 0:
            time.sleep(wait)


def default_runner(argv: list[str], ctx: RunnerContext) -> int:
    from on_device.runner import run_runner

    return run_runner(argv, ctx)


@dataclass
class Device:
    """What the services see of the phone: its files (sync), properties (banner), the running
    userland (shell, exec, tcp) and the `adb reverse` listeners."""

    fs: SandboxFS
    profile: DeviceProfile
    props: dict[str, str]
    run_runner: Callable[[list[str], RunnerContext], int] = default_runner
    userland: Any = None  # sandbox.DeviceUserland once started
    reverses: Any = None  # userland_services.Reverses


class StreamClosed(Exception):
    pass


class Stream:
    """One ADB stream as a service thread sees it: blocking read() / write() with flow control."""

    def __init__(self, conn: "Connection", local_id: int, remote_id: int, name: str):
        self.conn, self.local_id, self.remote_id, self.name = conn, local_id, remote_id, name
        self._inbox: collections.deque[bytes] = collections.deque()
        self._cv = threading.Condition()
        self._acked = threading.Event()
        self._acked.set()
        self._write_lock = threading.Lock()
        self.closed = False
        self.cancelled = threading.Event()

    @property
    def max_payload(self) -> int:
        return self.conn.max_payload

    # called by the connection thread
    def on_data(self, data: bytes) -> None:
        with self._cv:
            if self.closed:
                return
            if len(self._inbox) >= MAX_INBOX_PACKETS:
                raise P.ProtocolError(f"stream {self.name!r}: host ignores flow control")
            self._inbox.append(data)
            self._cv.notify_all()

    def on_okay(self) -> None:
        self._acked.set()

    def on_remote_close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()
        self._acked.set()
        self.cancelled.set()

    # called by the service thread
    def read(self) -> bytes:
        """The next payload from the host; b"" once the stream is closed."""
        with self._cv:
            while not self._inbox and not self.closed:
                self._cv.wait()
            if not self._inbox:
                return b""
            data = self._inbox.popleft()
        # Acknowledge only once consumed: that is the flow control towards the host.
        self.conn.send(P.A_OKAY, self.local_id, self.remote_id)
        return data

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        with self._write_lock:
            for off in range(0, len(view), self.max_payload):
                self._acked.wait()
                if self.closed:
                    raise StreamClosed(self.name)
                self._acked.clear()
                self.conn.send(P.A_WRTE, self.local_id, self.remote_id, view[off:off + self.max_payload])

    def close(self) -> None:
        """Close from our side (the service finished)."""
        with self._cv:
            if self.closed:
                return
            self.closed = True
            self._cv.notify_all()
        self._acked.set()
        self.cancelled.set()
        self.conn.forget(self)
        try:
            self.conn.send(P.A_CLSE, self.local_id, self.remote_id)
        except StreamClosed:
            pass


class Connection:
    def __init__(self, server: "EmulatorServer", sock: socket.socket, peer: str):
        self.server, self.sock, self.peer = server, sock, peer
        self.cfg = server.config
        self.version = P.A_VERSION_MIN
        self.negotiated = False
        self.max_payload = P.MAX_PAYLOAD_V1
        self.state = "offline"  # offline -> (auth ->) online
        self.authenticated = not self.cfg.auth
        self.token = b""
        self.failed_signatures = 0
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._streams_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.alive = True
        self.host_banner = ""
        self.link: Link | None = server.link

    # ---- output ---------------------------------------------------------------------------------
    def send(self, cmd: int, arg0: int, arg1: int, payload: bytes | memoryview = b"") -> None:
        # Checksums: always on connection/auth packets; otherwise only for hosts older than
        # 0x01000001, which still verify them (adb-shell does).
        with_check = cmd in (P.A_CNXN, P.A_AUTH) or self.version < P.A_VERSION_SKIP_CHECKSUM
        check = P.checksum(payload) if (with_check and len(payload)) else 0
        header = P.HEADER.pack(cmd, arg0, arg1, len(payload), check, cmd ^ 0xFFFFFFFF)
        if self.link is not None:
            self.link.carry(len(header) + len(payload))
        with self._send_lock:
            if not self.alive:
                raise StreamClosed("connection closed")
            try:
                self.sock.sendall(header)
                if len(payload):
                    self.sock.sendall(payload)
            except OSError as e:
                self.alive = False
                raise StreamClosed(f"send failed: {e}") from None

    # ---- input ----------------------------------------------------------------------------------
    def _recv_into(self, view: memoryview) -> bool:
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                if got:
                    raise P.ProtocolError(f"peer closed mid-packet ({got}/{len(view)} bytes)")
                return False
            got += n
        return True

    def run(self) -> None:
        reason = "closed by peer"
        try:
            self.sock.settimeout(self.cfg.handshake_timeout_s)
            hdr = bytearray(P.HEADER_SIZE)
            hview = memoryview(hdr)
            while self.server.running:
                if not self._recv_into(hview):
                    break
                h = P.parse_header(bytes(hdr), P.MAX_PAYLOAD)
                payload = bytearray(h.length)
                if h.length:
                    self.sock.settimeout(self.cfg.packet_timeout_s)
                    if not self._recv_into(memoryview(payload)):
                        raise P.ProtocolError("peer closed mid-packet")
                    self.sock.settimeout(None if self.state == "online" else self.cfg.handshake_timeout_s)
                if self.link is not None:
                    self.link.carry(P.HEADER_SIZE + h.length)
                skip = (self.negotiated and self.version >= P.A_VERSION_SKIP_CHECKSUM) or (
                    h.command == P.A_CNXN and h.arg0 >= P.A_VERSION_SKIP_CHECKSUM)
                P.check_payload(h, payload, skip)
                self.handle(h, payload)
        except P.ProtocolError as e:
            reason = f"protocol error: {e}"
            self.server.note_dropped(self.peer, reason)
        except socket.timeout:
            reason = "timed out" + (" (not authorized)" if self.state == "auth" else "")
            self.server.note_dropped(self.peer, reason)
        except (ConnectionError, OSError, StreamClosed) as e:
            reason = f"connection lost: {e}"
        except Exception:  # a bug: log it, but never take the server down
            log.exception("connection %s: internal error", self.peer)
            reason = "internal error"
        finally:
            log.info("connection %s closed: %s", self.peer, reason)
            self.shutdown()

    def shutdown(self) -> None:
        with self._send_lock:
            self.alive = False
        with self._streams_lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for s in streams:
            s.on_remote_close()
        reverses = self.server.device.reverses
        if reverses is not None:
            reverses.remove_all(self)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.server.forget(self)

    def forget(self, stream: Stream) -> None:
        with self._streams_lock:
            self._streams.pop(stream.local_id, None)

    # ---- packet handling ------------------------------------------------------------------------
    def handle(self, h: P.Header, payload: bytes | bytearray) -> None:
        cmd = h.command
        if cmd != P.A_WRTE:
            payload = bytes(payload)  # WRTE data stays a bytearray, handed over without a copy
        if cmd == P.A_CNXN:
            self._on_cnxn(h, payload)
        elif cmd == P.A_AUTH:
            self._on_auth(h, payload)
        elif self.state != "online":
            raise P.ProtocolError(f"{h.name} before the connection was authorized")
        elif cmd == P.A_OPEN:
            self._on_open(h, payload)
        elif cmd == P.A_WRTE:
            s = self._stream(h)
            if s is not None:
                s.on_data(payload)
        elif cmd in (P.A_OKAY, P.A_CLSE) and self._answer_to_open(h):
            pass
        elif cmd == P.A_OKAY:
            s = self._stream(h)
            if s is not None:
                s.on_okay()
        elif cmd == P.A_CLSE:
            s = self._stream(h)
            if s is not None:
                self.forget(s)
                was_open = not s.closed
                s.on_remote_close()
                if was_open:  # answer CLSE with CLSE; an answer to ours needs none
                    self.send(P.A_CLSE, s.local_id, s.remote_id)
        else:
            log.debug("connection %s: ignoring %s", self.peer, h.name)

    def _stream(self, h: P.Header) -> Stream | None:
        with self._streams_lock:
            s = self._streams.get(h.arg1)
        if s is None or s.remote_id != h.arg0:
            return None
        return s

    def _banner(self) -> bytes:
        props = self.server.device.props

        def clean(v: str) -> str:
            return v.replace(";", "_").replace(":", "_")

        parts = [f"{k}={clean(props.get(k, ''))}" for k in ("ro.product.name", "ro.product.model", "ro.product.device")]
        return ("device::" + ";".join(parts) + ";features=" + ",".join(self.cfg.features)).encode()

    def _on_cnxn(self, h: P.Header, payload: bytes) -> None:
        if h.arg1 < P.MIN_HOST_PAYLOAD:
            raise P.ProtocolError(f"host max payload {h.arg1} is too small")
        if self.state == "online":  # the host reconnects on the same socket: start over
            with self._streams_lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for s in streams:
                s.on_remote_close()
        self.version = min(h.arg0, P.A_VERSION)
        self.max_payload = min(h.arg1, P.MAX_PAYLOAD)
        self.negotiated = True
        self.host_banner = payload.split(b"\0", 1)[0].decode("utf-8", "replace")
        if self.authenticated:
            self._go_online()
        else:
            self.state = "auth"
            self._send_token()

    def _send_token(self) -> None:
        self.token = new_token()
        self.send(P.A_AUTH, P.AUTH_TOKEN, 0, self.token)

    def _go_online(self) -> None:
        self.authenticated = True
        self.state = "online"
        self.sock.settimeout(None)
        self.send(P.A_CNXN, self.version, self.max_payload, self._banner())
        log.info("connection %s online (version 0x%08x, max payload %d, host %r)",
                 self.peer, self.version, self.max_payload, self.host_banner[:80])

    def _on_auth(self, h: P.Header, payload: bytes) -> None:
        if self.state != "auth":
            log.debug("connection %s: AUTH outside the handshake ignored", self.peer)
            return
        keys = self.server.keys
        if h.arg0 == P.AUTH_SIGNATURE:
            key = keys.match(self.token, payload)
            if key is not None:
                log.info("connection %s: authorized key %s", self.peer, key.comment or "(no comment)")
                self._go_online()
                return
            self.failed_signatures += 1
            if self.failed_signatures > 16:
                raise P.ProtocolError("too many failed signatures")
            self._send_token()  # let the host try its next key
        elif h.arg0 == P.AUTH_RSAPUBLICKEY:
            try:
                key = parse_android_pubkey(payload)
            except Exception as e:
                raise P.ProtocolError(f"unreadable public key: {e}") from None
            if self.cfg.accept_new_keys:
                log.info("connection %s: accepting new key %s", self.peer, key.comment or "(no comment)")
                keys.add(key)
                self._go_online()
            else:
                # Like a phone whose user never confirms the dialog: stay unauthorized until timeout.
                log.warning("connection %s: refused unknown key %s", self.peer, key.comment or "(no comment)")
                self.state = "auth"
                self.token = b""  # no further signature can match
        else:
            raise P.ProtocolError(f"unknown AUTH type {h.arg0}")

    def open_to_host(self, name: str, timeout_s: float = 10.0) -> "Stream | None":
        """A stream the device opens towards the host (`adb reverse`: OPEN tcp:PORT); None when
        the host refuses it."""
        local_id = next(self._ids)
        stream = Stream(self, local_id, 0, name)
        stream.pending = threading.Event()
        with self._streams_lock:
            self._streams[local_id] = stream
        try:
            self.send(P.A_OPEN, local_id, 0, name.encode() + b"\0")
        except StreamClosed:
            self.forget(stream)
            return None
        stream.pending.wait(timeout_s)
        if not stream.remote_id or stream.closed:
            self.forget(stream)
            return None
        return stream

    def _answer_to_open(self, h: P.Header) -> bool:
        """OKAY or CLSE for a stream we opened (its remote id still unknown): consumed here."""
        with self._streams_lock:
            s = self._streams.get(h.arg1)
        pending = getattr(s, "pending", None) if s is not None else None
        if pending is None or pending.is_set():
            return False
        if h.command == P.A_OKAY and h.arg0:
            s.remote_id = h.arg0
        else:
            self.forget(s)
            s.on_remote_close()
        pending.set()
        return True

    def _on_open(self, h: P.Header, payload: bytes) -> None:
        name = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        remote_id = h.arg0
        if remote_id == 0:
            raise P.ProtocolError("OPEN with local id 0")
        with self._streams_lock:
            too_many = len(self._streams) >= self.cfg.max_streams_per_connection
        handler = None if too_many else find_userland_service(name)
        if handler is None:
            log.info("connection %s: refused service %r%s", self.peer, name[:100],
                     " (too many streams)" if too_many else "")
            self.send(P.A_CLSE, 0, remote_id)
            return
        local_id = next(self._ids)
        stream = Stream(self, local_id, remote_id, name)
        with self._streams_lock:
            self._streams[local_id] = stream
        self.send(P.A_OKAY, local_id, remote_id)
        log.debug("connection %s: open %d <- %d %r", self.peer, local_id, remote_id, name[:200])
        t = threading.Thread(target=self._serve_stream, args=(handler, stream),
                             name=f"svc-{self.peer}-{local_id}", daemon=True)
        t.start()

    def _serve_stream(self, handler, stream: Stream) -> None:
        try:
            handler(stream, self.server.device)
        except StreamClosed:
            pass
        except Exception:
            log.exception("service %r failed", stream.name[:100])
        finally:
            stream.close()


class EmulatorServer:
    """A virtual phone on a loopback TCP port."""

    def __init__(self, config: EmulatorConfig, runner=None):
        self.config = config
        prof = config.profile
        if config.storage_bytes:
            prof = prof.with_overrides(storage_bytes=int(config.storage_bytes))
            config.profile = prof
        check_root(Path(config.root))  # never someone's files: empty, new, or an emulator root
        self.fs = SandboxFS(config.root, prof.mounts, prof.storage_bytes)
        self.props = dict(prof.props)
        self.device = Device(self.fs, prof, self.props, run_runner=runner or default_runner)
        self.keys = AuthorizedKeys(config.authorized_keys)
        self.userland: DeviceUserland | None = None
        self.storage: Storage | None = None
        check_available()  # one line with the fix where bubblewrap cannot run: no fall-back
        self.running = False
        self._sock: socket.socket | None = None
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.port = 0
        self.dropped: list[tuple[str, str]] = []  # the latest 100
        self.dropped_count = 0
        self.link = Link(config.link_mb_s * 1e6) if config.link_mb_s else None

    @property
    def serial(self) -> str:
        return f"{self.config.host}:{self.port}"

    # ---- lifecycle ------------------------------------------------------------------------------
    def _bind(self) -> socket.socket:
        for _ in range(50):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.config.host, self.config.port))
            except OSError:
                s.close()
                raise
            port = s.getsockname()[1]
            if self.config.port or port not in ADB_EMULATOR_PORTS:
                return s
            s.close()
        raise OSError("no free port outside 5554-5585")

    def start(self) -> int:
        """Prepare the filesystem, bind, and serve in a background thread; returns the port."""
        self._sock = self._bind()
        self.port = self._sock.getsockname()[1]
        # Unique per instance, like real phones of the same model.
        self.props["ro.serialno"] = f"{self.props.get('ro.serialno', 'G4M')}{self.port}"
        self.props["service.adb.tcp.port"] = str(self.port)
        _sweep_stale()
        self.storage = Storage(self.fs.root, self.config.profile.storage_bytes)
        self.fs.raw_link_dirs = Storage.DIRS
        try:
            self._prepare_fs()
            self._start_userland()
            # From here on the device's files are in the device's namespace only (fs.py).
            self.storage.hide()
            self.fs.enter_device_view(f"/proc/{self.userland.init_pid}/root")
        except BaseException:
            if self.userland is not None:
                self.userland.close()
            if self.storage is not None:
                self.storage.close()
            raise
        self._sock.listen(64)
        self.running = True
        self._thread = threading.Thread(target=self._accept_loop, name=f"adbd-{self.port}", daemon=True)
        self._thread.start()
        log.info("emulator %s (%s) listening on %s, root %s, features %s", self.config.profile.name,
                 self.config.profile.model, self.serial, self.fs.root, ",".join(self.config.features))
        return self.port

    def serve_forever(self) -> None:
        if not self.running:
            self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        self.running = False
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            try:
                self._sock.close()
            except OSError:
                pass
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(5)
        if self.userland is not None:
            self.userland.close()
        if self.storage is not None:
            self.storage.close()

    def _start_userland(self) -> None:
        cache = state_dir() / "userland"
        self.userland = DeviceUserland(self.fs, self.config.profile, self.props, self.device.run_runner, cache,
                                       self._identity())
        self.userland.engine_cache_dir = state_dir() / "engine-cache"
        self.device.userland = self.userland
        self.device.reverses = Reverses(self.userland)

    def drop_connections(self) -> None:
        """Cut every ADB connection, as a pulled cable would; the server keeps listening."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "EmulatorServer":
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- internals ------------------------------------------------------------------------------
    def _prepare_fs(self) -> None:
        fs = self.fs
        fs.write_marker()
        # A killed emulator may have left upload temporaries, and older versions other link forms.
        cleaned, hardened = fs.clean_partials(), fs.migrate_links()
        if cleaned or hardened:
            log.info("root %s: removed %d stale upload file(s), rewrote %d link(s)", fs.root, cleaned, hardened)
        fs.ensure_layout(("/data/local/tmp", "/storage/emulated/0", "/system/bin", "/vendor/lib64"))
        fs.layout_symlink("/storage/emulated/0", "/sdcard")
        build_prop = "".join(f"{k}={v}\n" for k, v in sorted(self.props.items()))
        fs.write_layout_file("/system/build.prop", build_prop.encode(), 0o444)

    def _identity(self) -> dict[str, bytes]:
        """The profile's /proc/meminfo, cpuinfo and version, bound over the device's real procfs."""
        prof = self.config.profile
        kb = prof.ram_bytes // 1024
        avail = prof.ram_budget_bytes // 1024
        meminfo = (f"MemTotal:       {kb:>8} kB\nMemFree:        {avail // 3:>8} kB\n"
                   f"MemAvailable:   {avail:>8} kB\nBuffers:        {4096:>8} kB\n"
                   f"Cached:         {avail // 2:>8} kB\nSwapCached:            0 kB\n"
                   f"SwapTotal:      {kb // 2:>8} kB\nSwapFree:       {kb // 2:>8} kB\n")
        cpus = "".join(
            f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
            f"atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\n"
            f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd81\nCPU revision\t: 1\n\n"
            for i in range(prof.cpu_count)) + f"Hardware\t: {prof.cpu_hardware or prof.soc_model}\n"
        version = f"Linux version {prof.kernel_release} (android-build) #1 SMP PREEMPT\n"
        return {"meminfo": meminfo.encode(), "cpuinfo": cpus.encode(), "version": version.encode()}

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while self.running:
            try:
                sock, addr = self._sock.accept()
            except OSError:
                break
            peer = f"{addr[0]}:{addr[1]}"
            with self._lock:
                full = len(self._conns) >= self.config.max_connections
            if full:
                log.warning("refusing %s: %d connections already", peer, self.config.max_connections)
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn = Connection(self, sock, peer)
            with self._lock:
                self._conns.add(conn)
            log.info("connection %s accepted", peer)
            threading.Thread(target=conn.run, name=f"conn-{peer}", daemon=True).start()

    def forget(self, conn: Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def note_dropped(self, peer: str, reason: str) -> None:
        log.warning("dropping connection %s: %s", peer, reason)
        with self._lock:
            self.dropped.append((peer, reason))
            self.dropped_count += 1
            del self.dropped[:-100]

    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)
