"""Run uploaded ``torch.export`` programs (``.pt2``) in sandbox host processes.

Loading a ``.pt2`` runs pickle, so a crafted file executes code (torch 2.13's
``torch.export.load`` retries a member with full unpickling and still loads). This module
never loads one; it starts ``python -m backend.workers.sandbox_host`` — one long-lived,
confined process per program — and talks to it over pipes with ``backend.services.wire``
frames (JSON + safetensors; the parent never unpickles anything from a host).

    pool = SandboxPool(settings)
    sm = pool.get(program_path, spec)          # starts (or reuses) the host
    sm.logits(inputs)                          # == sm.call("logits", inputs=inputs)["logits"]
    sm.call("estimator", name="estimators.interactions.cross_hessian",
            inputs=inputs, a="image", b="text", target=0)
    pool.shutdown()

Hosts are started on first use, kept warm, stopped after ``idle_timeout_s``, restarted once
when one dies mid-call, and killed when a call exceeds its timeout. Every failure surfaces as
``SandboxError`` with a message a user can act on (``SandboxInputError`` when the request
itself was wrong: map it to a 4xx).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from backend.core.config import Settings
from backend.services import wire
from estimators.model import ModelSpec

HOST_MODULE = "backend.workers.sandbox_host"
ERROR_KINDS = frozenset({"load", "input", "op", "model", "limit"})


class SandboxError(RuntimeError):
    """A sandboxed model failed; ``kind`` is one of load, input, op, model, limit, crash,
    timeout, protocol. The message is meant for the user."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class SandboxInputError(SandboxError):
    """The request was wrong (bad inputs, unknown op or estimator): a client error."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-host limits. ``cpu_seconds`` is the CPU budget of one host's whole life (the
    kernel's RLIMIT_CPU); a host that spends it is killed and restarted on the next call."""

    memory_mb: int = 4096
    cpu_seconds: int = 3600
    open_files: int = 256
    file_size_mb: int = 64
    call_timeout_s: float = 120.0
    start_timeout_s: float = 90.0
    idle_timeout_s: float = 600.0
    max_reply_mb: int = 512
    max_request_mb: int = 512
    namespaces: bool = True
    landlock: bool = True


class _HostDied(Exception):
    pass


class _Zygote:
    """The pre-imported process that forks hosts (``backend.workers.sandbox_host``).

    It runs only crosslens code and never reads a program; started on the first host, and
    again if it dies. Talks JSON over a SOCK_SEQPACKET socket; fds travel with SCM_RIGHTS.
    """

    def __init__(self, threads: int, start_timeout_s: float) -> None:
        self.threads, self.start_timeout_s = threads, start_timeout_s
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.workdir: Path | None = None
        self.last_spawn = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, config: Mapping[str, Any], fds: list[int]) -> int:
        """Fork a host that gets ``fds`` (requests in, replies out, program, log); its pid."""
        with self.lock:
            self.last_spawn = time.monotonic()
            for attempt in (1, 2):
                if not self.alive:
                    self._start()
                try:
                    reply = self._ask({"op": "spawn", "config": dict(config)}, fds)
                    return int(reply["pid"])
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    self.stop()
                    if attempt == 2:
                        raise SandboxError(f"the sandbox could not start a host ({exc})",
                                           "crash") from exc
        raise AssertionError("unreachable")

    def exit_status(self, pid: int) -> int | None:
        """The host's exit code (minus the signal number when killed), None if unknown."""
        with self.lock:
            if not self.alive:
                return None
            try:
                status = self._ask({"op": "status", "pid": pid}, [])["status"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
            return status if isinstance(status, int) else None

    def _ask(self, request: Mapping[str, Any], fds: list[int]) -> dict[str, Any]:
        assert self.sock is not None
        socket.send_fds(self.sock, [json.dumps(request).encode()], fds)
        message = self.sock.recv(1 << 16)
        if not message:
            raise OSError("the sandbox zygote closed its socket")
        reply = json.loads(message)
        if not isinstance(reply, dict):
            raise ValueError("the sandbox zygote sent a malformed reply")
        return reply

    def _start(self) -> None:
        self.stop()
        self.workdir = Path(tempfile.mkdtemp(prefix="crosslens-sandbox-zygote-"))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with open(self.workdir / "zygote.log", "wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", HOST_MODULE, str(theirs.fileno())],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir,
                    env=minimal_env(self.workdir, self.threads), pass_fds=(theirs.fileno(),),
                    start_new_session=True)
        finally:
            theirs.close()
        self.sock = ours
        ours.settimeout(self.start_timeout_s)
        try:
            ready = ours.recv(1 << 10)
        except OSError as exc:
            self.stop()
            raise SandboxError(f"the sandbox did not start within {self.start_timeout_s:g} s",
                               "timeout") from exc
        if not ready:
            self.stop()
            raise SandboxError("the sandbox could not start (its zygote exited; see the "
                               "server log)", "crash")
        ours.settimeout(30.0)

    def stop(self) -> None:
        sock, self.sock = self.sock, None
        proc, self.proc = self.proc, None
        if sock is not None:
            sock.close()  # EOF: the zygote exits by itself
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


class _Host:
    """One host process for one (program, spec); callers hold ``lock`` around requests."""

    def __init__(self, program: Path, spec: ModelSpec, limits: SandboxLimits,
                 threads: int, zygote: _Zygote) -> None:
        self.program, self.spec, self.limits, self.threads = program, spec, limits, threads
        self.zygote = zygote
        self.lock = threading.Lock()
        self.pid: int | None = None
        self._pidfd: int | None = None
        self._requests: int | None = None  # write end of the host's request pipe
        self._replies: int | None = None  # read end of its reply pipe
        self.workdir: Path | None = None
        self.report: dict[str, Any] = {}
        self.last_used = time.monotonic()
        self._next_id = 0

    @property
    def alive(self) -> bool:
        return self._pidfd is not None and not _exited(self._pidfd, 0)

    def start(self) -> None:
        self.stop()
        self.workdir = Path(tempfile.mkdtemp(prefix="crosslens-sandbox-"))
        try:
            program_fd = os.open(self.program, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.stop()
            raise SandboxError(f"cannot open the program file {self.program.name}: "
                               f"{exc.strerror}", "load") from exc
        lim = self.limits
        config = {"memory_mb": lim.memory_mb, "cpu_seconds": lim.cpu_seconds,
                  "open_files": lim.open_files, "file_size_mb": lim.file_size_mb,
                  "threads": self.threads, "workdir": str(self.workdir),
                  "max_request_bytes": lim.max_request_mb << 20,
                  "namespaces": lim.namespaces, "landlock": lim.landlock}
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        log_fd = os.open(self.workdir / "host.log", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
        try:
            self.pid = self.zygote.spawn(config, [requests_r, replies_w, program_fd, log_fd])
            self._pidfd = os.pidfd_open(self.pid)
        except BaseException:
            for fd in (requests_w, replies_r):
                os.close(fd)
            self.stop()
            raise
        finally:
            for fd in (requests_r, replies_w, program_fd, log_fd):
                os.close(fd)
        self._requests, self._replies = requests_w, replies_r
        os.set_blocking(requests_w, False)
        deadline = time.monotonic() + lim.start_timeout_s
        try:
            wire.write_frame(requests_w, {"op": "load", "spec": self.spec.model_dump_json()},
                             {}, deadline)
            header, _ = self._read(deadline)
        except wire.FrameTimeout as exc:
            self.stop()
            raise SandboxError(f"the model host did not start within {lim.start_timeout_s:g} s",
                               "timeout") from exc
        except _HostDied as exc:
            raise SandboxError(f"the model could not be loaded: {exc}", "load") from exc
        if not header.get("ok"):
            self.stop()
            raise SandboxError(f"the model could not be loaded: {_message(header)}", "load")
        report = header.get("sandbox")
        self.report = report if isinstance(report, dict) else {}
        self.last_used = time.monotonic()

    def request(self, op: str, args: Mapping[str, Any], timeout_s: float) -> Any:
        assert self._requests is not None
        self._next_id += 1
        request_id = self._next_id
        tree, tensors = wire.pack(dict(args))
        deadline = time.monotonic() + timeout_s
        try:
            wire.write_frame(self._requests, {"id": request_id, "op": op, "args": tree},
                             tensors, deadline)
            header, out = self._read(deadline)
        except wire.FrameTimeout as exc:
            self.stop()
            raise SandboxError(f"the model did not answer {op!r} within {timeout_s:g} s; its "
                               "host was stopped and restarts on the next request",
                               "timeout") from exc
        except wire.PeerClosed as exc:  # died before reading the whole request
            reason = self._death_reason()
            self.stop()
            raise _HostDied(reason) from exc
        finally:
            self.last_used = time.monotonic()
        if header.get("id") != request_id:
            self.stop()
            raise SandboxError("the model host answered out of turn; it was stopped",
                               "protocol")
        if not header.get("ok"):
            kind = header.get("kind")
            kind = kind if kind in ERROR_KINDS else "model"
            error = SandboxInputError if kind in ("input", "op") else SandboxError
            raise error(_message(header), kind)
        try:
            return wire.unpack(header.get("result"), out)
        except wire.WireError as exc:
            self.stop()
            raise SandboxError(f"the model host sent a malformed reply ({exc}); it was "
                               "stopped", "protocol") from exc

    def _read(self, deadline: float) -> tuple[dict[str, Any], dict[str, Tensor]]:
        assert self._replies is not None
        try:
            return wire.read_frame(self._replies, max_bytes=self.limits.max_reply_mb << 20,
                                   deadline=deadline)
        except wire.PeerClosed as exc:
            reason = self._death_reason()
            self.stop()
            raise _HostDied(reason) from exc
        except wire.FrameTimeout:
            raise
        except wire.WireError as exc:
            self.stop()
            raise SandboxError(f"the model host broke the protocol ({exc}); it was stopped",
                               "protocol") from exc

    def _death_reason(self) -> str:
        code = None
        if self._pidfd is not None and _exited(self._pidfd, 5.0) and self.pid is not None:
            code = self.zygote.exit_status(self.pid)
        if code is None:
            reason = "it ended unexpectedly"
        elif code == -signal.SIGXCPU:
            reason = f"it used up its CPU-time limit ({self.limits.cpu_seconds} s)"
        elif code == -signal.SIGKILL:
            reason = "it was killed (out of memory, or stopped by an administrator)"
        elif code < 0:
            reason = f"it was killed by signal {signal.Signals(-code).name}"
        else:
            reason = f"it exited with code {code}"
        last = self._log_tail()
        return f"{reason}; last message: {last}" if last else reason

    def _log_tail(self) -> str:
        if self.workdir is None:
            return ""
        try:
            with open(self.workdir / "host.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:500] if lines else ""

    def stop(self) -> None:
        for fd in (self._requests, self._replies):
            if fd is not None:
                os.close(fd)  # EOF on its request pipe: the host exits by itself
        self._requests = self._replies = None
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            if not _exited(pidfd, 2.0):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                _exited(pidfd, 5.0)
            if self.pid is not None:  # processes the program forked stay in its group
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
            os.close(pidfd)
        self.pid = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _exited(pidfd: int, timeout_s: float) -> bool:
    """A pidfd turns readable when its process ends (works for non-children too)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


def minimal_env(workdir: Path, threads: int) -> dict[str, str]:
    """The host's whole environment: no CROSSLENS_* settings, tokens or database URL."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(workdir),
           "TMPDIR": str(workdir), "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _message(header: Mapping[str, Any]) -> str:
    error = header.get("error")
    return str(error)[:2000] if error else "the model host reported an unknown error"


EXPORT_HINT = ("export with torch.export.export(module, (), inputs, dynamic_shapes="
               "{name: {0: torch.export.Dim('batch')} for name in inputs}), where inputs is the "
               "dict of example tensors keyed by modality name, then torch.export.save(ep, path)")
MAX_GRAPH_JSON_BYTES = 64 << 20


def inspect_pt2(path: Path, spec: ModelSpec) -> None:
    """Refuse, without loading it, a file that is not a ``torch.export`` archive or whose
    program cannot serve the spec (positional inputs, other names, a fixed batch size).

    Reads only the archive's JSON graph (``zipfile`` + ``json``: nothing executes), so the
    API can answer an upload at once; the host repeats the checks on the loaded program.
    Unknown layouts of future torch versions pass here and are judged by the host.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = [i for i in archive.infolist() if i.filename.endswith("models/model.json")]
            if not members:
                raise SandboxError("this is not a torch.export program (no models/model.json "
                                   f"inside); {EXPORT_HINT}", "load")
            if members[0].file_size > MAX_GRAPH_JSON_BYTES:
                raise SandboxError("the program's graph is too large to inspect", "load")
            graph = json.loads(archive.read(members[0]))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SandboxError(f"this is not a torch.export .pt2 archive ({exc}); "
                           f"{EXPORT_HINT}", "load") from exc
    try:
        module = graph["graph_module"]
        names = [s["user_input"]["arg"]["as_tensor"]["name"]
                 for s in module["signature"]["input_specs"] if "user_input" in s]
        _version, tree = json.loads(module["module_call_graph"][0]["signature"]["in_spec"])
        args_spec, kwargs_spec = tree["children_spec"]
        keys = json.loads(kwargs_spec["context"]) or []
        sizes = {n: module["graph"]["tensor_values"][n]["sizes"] for n in names}
    except (KeyError, IndexError, TypeError, ValueError):
        return
    if args_spec["children_spec"] or sorted(keys) != sorted(spec.names):
        raise SandboxError(f"the program must be called with keyword tensors {spec.names} "
                           f"(one per modality of the spec), but it takes "
                           f"{len(args_spec['children_spec'])} positional arguments and "
                           f"keywords {keys}; {EXPORT_HINT}", "load")
    for key, name in zip(keys, names, strict=False):
        if sizes[name] and "as_int" in sizes[name][0]:
            raise SandboxError(f"input {key!r} was exported with a fixed batch size of "
                               f"{sizes[name][0]['as_int']}; estimators call the model with "
                               f"many batch sizes, so the batch dimension must be dynamic: "
                               f"{EXPORT_HINT}", "load")


_Key = tuple[str, str, SandboxLimits]  # program path, spec JSON, limits


class SandboxedModel:
    """A handle on a ``.pt2`` model living in a sandbox host; cheap, survives host restarts."""

    def __init__(self, pool: SandboxPool, key: _Key, spec: ModelSpec) -> None:
        self._pool, self._key, self.spec = pool, key, spec

    def call(self, op: str, /, *, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """Run an allowlisted op in the host: ``logits``, ``embed``, ``gradients`` (of
        ``target`` w.r.t. feature space) or ``estimator`` (``name=`` a dotted estimator
        function, the rest its keyword arguments). Returns tensors / JSON values."""
        result = self._pool._call(self._key, op, kwargs, timeout_s)
        _check_reply(op, kwargs, result, self.spec)
        return result

    def logits(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.call("logits", inputs=dict(inputs))["logits"]

    __call__ = logits

    def embed(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return self.call("embed", inputs=dict(inputs))

    def gradients(self, inputs: Mapping[str, Tensor], target: int | Tensor,
                  output: str = "logits") -> dict[str, Tensor]:
        return self.call("gradients", inputs=dict(inputs), target=target, output=output)

    def estimator(self, name: str, **kwargs: Any) -> Any:
        return self.call("estimator", name=name, **kwargs)

    @property
    def sandbox(self) -> dict[str, Any]:
        """What confinement is in force (namespaces, landlock_abi, network, limits, env)."""
        return dict(self._pool._hosts[self._key].report)

    @property
    def pid(self) -> int | None:
        host = self._pool._hosts[self._key]
        return host.pid if host.alive else None

    @property
    def workdir(self) -> Path | None:
        return self._pool._hosts[self._key].workdir


def _check_reply(op: str, kwargs: Mapping[str, Any], result: Any, spec: ModelSpec) -> None:
    """Replies to the model ops must have the spec's keys, floating tensors, the batch size."""
    if op not in ("logits", "embed", "gradients"):
        return
    inputs = kwargs.get("inputs") or {}
    batch = next(iter(inputs.values())).shape[0] if inputs else None
    expected = ["logits"] if op == "logits" else spec.names
    if not isinstance(result, dict) or sorted(result) != sorted(expected):
        raise SandboxError(f"the model host's {op!r} reply has keys "
                           f"{sorted(result) if isinstance(result, dict) else type(result)}, "
                           f"expected {sorted(expected)}", "protocol")
    for name, value in result.items():
        if not isinstance(value, Tensor) or not value.is_floating_point() or value.ndim == 0 \
                or (batch is not None and value.shape[0] != batch):
            raise SandboxError(f"the model host's {op!r} reply {name!r} is not a floating "
                               f"tensor with batch size {batch}", "protocol")
    if op == "logits" and (result["logits"].ndim != 2
                           or result["logits"].shape[1] != spec.n_classes):
        raise SandboxError(f"the model returned logits of shape {list(result['logits'].shape)}"
                           f", expected [B, {spec.n_classes}] (one per class of the spec)",
                           "model")


class SandboxPool:
    """One host per (program file, spec), started on first use and stopped when idle."""

    def __init__(self, settings: Settings, limits: SandboxLimits | None = None) -> None:
        self.settings = settings
        self.limits = limits or SandboxLimits()
        self._hosts: dict[_Key, _Host] = {}
        self._zygote = _Zygote(settings.torch_threads, self.limits.start_timeout_s)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None
        atexit.register(_shutdown_ref, weakref.ref(self))

    def get(self, program_path: Path, spec: ModelSpec, *,
            limits: SandboxLimits | None = None) -> SandboxedModel:
        """A handle on the program; its host is started now (load errors surface here).
        ``limits`` overrides the pool's for this program (memory, CPU, idle timeout...)."""
        key = (str(Path(program_path).resolve()), spec.model_dump_json(),
               limits or self.limits)
        with self._lock:
            host = self._hosts.get(key)
            if host is None:
                host = self._hosts[key] = _Host(Path(key[0]), spec, key[2],
                                                self.settings.torch_threads, self._zygote)
            self._start_reaper()
        with host.lock:
            if not host.alive:
                try:
                    inspect_pt2(host.program, spec)
                    host.start()
                except SandboxError:
                    with self._lock:
                        self._hosts.pop(key, None)
                    raise
        return SandboxedModel(self, key, spec)

    def _call(self, key: _Key, op: str, args: Mapping[str, Any],
              timeout_s: float | None) -> Any:
        with self._lock:
            host = self._hosts.get(key)
            self._start_reaper()
        if host is None:
            raise SandboxError("this model's sandbox host is gone; load the model again",
                               "crash")
        timeout = timeout_s if timeout_s is not None else self.limits.call_timeout_s
        with host.lock:
            for attempt in (1, 2):
                if not host.alive:
                    host.start()
                try:
                    return host.request(op, args, timeout)
                except _HostDied as exc:
                    if attempt == 2:
                        raise SandboxError(f"the model host crashed twice while running "
                                           f"{op!r}: {exc}", "crash") from exc
        raise AssertionError("unreachable")

    def _start_reaper(self) -> None:
        """Called with ``_lock`` held: one idle reaper runs while the pool is in use."""
        if self._reaper is None:
            self._stopping = threading.Event()
            self._reaper = threading.Thread(target=self._reap, args=(self._stopping,),
                                            name="sandbox-reaper", daemon=True)
            self._reaper.start()

    def _reap(self, stopping: threading.Event) -> None:
        """Stop hosts idle for longer than ``idle_timeout_s`` (busy ones are skipped)."""
        interval = max(0.05, min(self.limits.idle_timeout_s / 4, 1.0))
        while not stopping.wait(interval):
            now = time.monotonic()
            with self._lock:
                hosts = list(self._hosts.values())
            for host in hosts:
                if host.alive and now - host.last_used > host.limits.idle_timeout_s \
                        and host.lock.acquire(blocking=False):
                    try:
                        host.stop()
                    finally:
                        host.lock.release()
            zygote = self._zygote
            if zygote.alive and not any(host.alive for host in hosts) \
                    and now - zygote.last_spawn > self.limits.idle_timeout_s \
                    and zygote.lock.acquire(blocking=False):
                try:  # nothing to fork for a while: give its memory back
                    zygote.stop()
                finally:
                    zygote.lock.release()

    def running(self, program_path: Path | None = None) -> int:
        """How many hosts are up now (for one program, when ``program_path`` is given)."""
        wanted = str(Path(program_path).resolve()) if program_path is not None else None
        with self._lock:
            return sum(host.alive for key, host in self._hosts.items()
                       if wanted is None or key[0] == wanted)

    def shutdown(self) -> None:
        """Stop every host and the idle reaper. Handles stay valid: a later call starts
        its host again (an app restarted in the same process keeps working)."""
        with self._lock:
            hosts = list(self._hosts.values())
            reaper, self._reaper = self._reaper, None
            self._stopping.set()
        for host in hosts:
            with host.lock:
                host.stop()
        with self._zygote.lock:
            self._zygote.stop()
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout=5)


_process_pools: dict[tuple[str, int], SandboxPool] = {}
_process_pools_lock = threading.Lock()


def process_pool(settings: Settings) -> SandboxPool:
    """This process's pool, created on first use: for processes without an app (a Dask
    worker runs ``.pt2`` estimators through it; pass program path + spec to the task, not a
    ``SandboxedModel``, which holds pipes and cannot be pickled)."""
    key = (str(Path(settings.data_dir).resolve()), settings.torch_threads)
    with _process_pools_lock:
        pool = _process_pools.get(key)
        if pool is None:
            pool = _process_pools[key] = SandboxPool(settings)
        return pool


def _shutdown_ref(ref: weakref.ref[SandboxPool]) -> None:
    pool = ref()
    if pool is not None:
        pool.shutdown()


__all__ = ["SandboxError", "SandboxInputError", "SandboxLimits", "SandboxPool",
           "SandboxedModel", "inspect_pt2", "process_pool"]
