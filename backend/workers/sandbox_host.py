"""The sandbox hosts: the only processes that ever load an uploaded ``.pt2`` program.

``python -m backend.workers.sandbox_host FD`` is the *zygote* started by
``backend.services.sandbox.SandboxPool``: it imports torch and the export loader once and
forks one host per program on request (``FD`` is its control socket), so a new host costs a
fork and a load instead of seconds of imports. Loading a ``.pt2`` runs pickle (torch 2.13's
``torch.export.load`` silently retries a member with full unpickling), so the program may run
arbitrary code in its host. Before anything of the program is read, the forked host confines
itself (``confine``):

1. resource limits (``RLIMIT_AS``, ``RLIMIT_CPU``, ``RLIMIT_NOFILE``, ``RLIMIT_FSIZE``,
   no core dumps), soft = hard so the program cannot raise them;
2. a new user + network namespace (``unshare(CLONE_NEWUSER | CLONE_NEWNET)``, unprivileged):
   no network interface but a downed loopback, so no TCP/UDP anywhere;
3. Landlock (unprivileged LSM, Linux >= 5.13): files may be written only under the host's own
   temp dir and read only from the Python installation and the crosslens packages (not the
   data dir, not the database); TCP bind/connect denied (ABI >= 4); no signals to, or
   abstract sockets of, processes outside the sandbox (ABI >= 6).

Each layer is best effort and reported to the parent in the ``ready`` reply, so the API can
say what protection is in force on this machine. The environment is minimal (the parent
passes no CROSSLENS_* variables, tokens or database URL), the program arrives as an open file
descriptor (the host needs no access to the storage directory), and the host talks to its
parent over two pipes with ``backend.services.wire`` frames (JSON + safetensors).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import importlib.util
import json
import os
import resource
import select
import site
import socket
import sys
import sysconfig
import time
import traceback
from typing import Any

# -- confinement (runs in the forked host before any byte of the program is read) ----------

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 14, 1 << 15
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_FS_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_SYSTEM_READ_DIRS = ("/usr", "/lib", "/lib64", "/etc", "/proc", "/sys", "/dev")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def set_limits(config: dict[str, Any]) -> dict[str, int | None]:
    """Apply the resource limits (soft = hard, so the program cannot raise them)."""
    mib = 1024 * 1024
    wanted = {
        "RLIMIT_AS": config["memory_mb"] * mib if config.get("memory_mb") else None,
        "RLIMIT_CPU": config.get("cpu_seconds"),
        "RLIMIT_NOFILE": config.get("open_files"),
        "RLIMIT_FSIZE": config["file_size_mb"] * mib if config.get("file_size_mb") else None,
        "RLIMIT_CORE": 0,
    }
    applied: dict[str, int | None] = {}
    for name, value in wanted.items():
        if value is None:
            continue
        which = getattr(resource, name)
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, value))
            applied[name] = value
        except (ValueError, OSError):
            applied[name] = None
    return applied


def enter_namespaces() -> str | None:
    """New user + network namespace; returns None on success, else why it failed.

    Must run while the process is single-threaded: a freshly forked host is.
    The calling uid is mapped to root inside the namespace so files can still be created.
    """
    uid, gid = os.getuid(), os.getgid()
    libc = _libc()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        return f"unshare failed: {os.strerror(ctypes.get_errno())}"
    try:
        for path, text in (("/proc/self/setgroups", "deny"),
                           ("/proc/self/uid_map", f"0 {uid} 1"),
                           ("/proc/self/gid_map", f"0 {gid} 1")):
            with open(path, "w") as f:
                f.write(text)
    except OSError as exc:
        return f"user namespace id mapping failed: {exc}"
    return None


def _read_paths() -> list[str]:
    """What the host may read: the Python installation and the two packages it imports."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *_SYSTEM_READ_DIRS}
    paths.update(site.getsitepackages())
    paths.update(p for p in (sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib"))
                 if p)
    for package in ("backend", "estimators"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            paths.update(spec.submodule_search_locations)
    return sorted(p for p in paths if os.path.exists(p))


def landlock(workdir: str) -> tuple[int, str | None]:
    """Confine file access (read: Python + packages, write: ``workdir``) and TCP.

    Returns ``(abi, error)``; ``abi`` is 0 when Landlock is unavailable.
    """
    libc = _libc()
    abi = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 0:
        return 0, f"Landlock unavailable: {os.strerror(ctypes.get_errno())}"
    handled_fs = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        handled_fs |= 1 << 13  # REFER
    if abi >= 3:
        handled_fs |= _FS_TRUNCATE
    if abi >= 5:
        handled_fs |= _FS_IOCTL_DEV
    attr = _RulesetAttr(handled_access_fs=handled_fs,
                        handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
                        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr),
                           ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return 0, f"Landlock ruleset refused: {os.strerror(ctypes.get_errno())}"
    try:
        rules = [(p, _FS_READ) for p in _read_paths()]
        rules += [(workdir, handled_fs), ("/dev/null", _FS_READ_FILE | _FS_WRITE_FILE)]
        for path, access in rules:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                if not os.path.isdir(path):
                    access &= _FS_FILE_RIGHTS
                rule = _PathBeneathAttr(allowed_access=access & handled_fs, parent_fd=fd)
                if libc.syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset),
                                ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                                ctypes.c_uint32(0)) != 0:
                    return 0, f"Landlock rule for {path} refused: " \
                              f"{os.strerror(ctypes.get_errno())}"
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return 0, f"no_new_privs refused: {os.strerror(ctypes.get_errno())}"
        if libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset),
                        ctypes.c_uint32(0)) != 0:
            return 0, f"Landlock restrict_self refused: {os.strerror(ctypes.get_errno())}"
    finally:
        os.close(ruleset)
    return int(abi), None


def network_probe() -> str:
    """Try a TCP connect to 127.0.0.1; 'blocked' unless the network stack answered."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(("127.0.0.1", 9))
        return "open"
    except ConnectionRefusedError:
        return "open"  # a reachable loopback answered with a reset
    except OSError as exc:
        return f"blocked ({errno.errorcode.get(exc.errno or 0, exc)})"
    finally:
        s.close()


def confine(config: dict[str, Any]) -> dict[str, Any]:
    """Apply every layer; return a report of what is in force."""
    report: dict[str, Any] = {"limits": set_limits(config)}
    ns_error = enter_namespaces() if config.get("namespaces", True) else "disabled"
    report["namespaces"] = ns_error is None
    report["namespaces_error"] = ns_error
    abi, ll_error = landlock(os.getcwd()) if config.get("landlock", True) else (0, "disabled")
    report["landlock_abi"] = abi
    report["landlock_error"] = ll_error
    report["network"] = network_probe()
    return report


# -- the program and its ops (torch is imported inside, after confinement) -------------------

ESTIMATORS: frozenset[str] = frozenset({
    "estimators.attribution.attribute",
    "estimators.interactions.cross_hessian",
    "estimators.interactions.interaction_heatmap",
    "estimators.interactions.integrated_hessians",
    "estimators.attention.capture_attention",
    "estimators.attention.trace_attention",
    "estimators.ablation.ablate",
    "estimators.ablation.modality_shapley",
    "estimators.emap.emap_logits",
})
"""Estimator functions a request may call by dotted name, as ``fn(model, **kwargs)``."""

EXPORT_HINT = ("export with torch.export.export(module, (), inputs, dynamic_shapes="
               "{name: {0: torch.export.Dim('batch')} for name in inputs}), where inputs is the "
               "dict of example tensors keyed by modality name, then torch.export.save(ep, path)")


class ProgramError(Exception):
    """A request or program the host refuses; ``kind`` is 'load', 'input' or 'op'."""

    def __init__(self, message: str, kind: str = "input") -> None:
        super().__init__(message)
        self.kind = kind


class LoadedProgram:
    """An exported program, unflattened to its module tree and wrapped as a
    ``MultimodalModel`` so every estimator (hooks at ``spec.embedding`` included) works."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    def load(cls, file: Any, spec_json: str) -> LoadedProgram:
        import torch
        from pydantic import ValidationError

        from estimators.model import InputError, ModelSpec, MultimodalModel

        try:
            spec = ModelSpec.model_validate_json(spec_json)
        except ValidationError as exc:
            raise ProgramError(f"invalid ModelSpec: {exc}", "load") from exc
        program = torch.export.load(file)
        check_program(program, spec)
        module = torch.export.unflatten(program)
        for submodule in module.modules():
            # run generated Python code, not torch.fx.Interpreter node by node (~10x faster
            # on small models); submodules are still called through __call__, so hooks work
            if hasattr(submodule, "_run_with_interpreter"):
                submodule._run_with_interpreter = False
        try:
            model = MultimodalModel(module, spec)
        except InputError as exc:
            names = [n for n, _ in module.named_modules() if n]
            raise ProgramError(f"{exc}; the program's submodules are {names[:40]}",
                               "load") from exc
        return cls(model)

    def run(self, op: str, args: dict[str, Any]) -> Any:
        handler = _OPS.get(op)
        if handler is None:
            raise ProgramError(f"unknown op {op!r}; allowed: {sorted(_OPS)}", "op")
        try:
            return handler(self.model, args)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProgramError(str(exc) or type(exc).__name__, "input") from exc


def check_program(program: Any, spec: Any) -> None:
    """The program must take the spec's modalities as keyword tensors with a dynamic batch."""
    import torch

    in_spec = program.call_spec.in_spec
    args_spec, kwargs_spec = in_spec.children() if in_spec is not None else (None, None)
    keys = list(kwargs_spec.context) if kwargs_spec is not None else []
    if args_spec is None or args_spec.num_children or sorted(keys) != sorted(spec.names):
        raise ProgramError(f"the program must be called with keyword tensors {spec.names} "
                           f"(one per modality of the spec), but it takes "
                           f"{args_spec.num_children if args_spec else '?'} positional "
                           f"arguments and keywords {keys}; {EXPORT_HINT}", "load")
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    for key, node_name in zip(keys, program.graph_signature.user_inputs, strict=False):
        val = placeholders[node_name].meta.get("val")
        if val is None or not isinstance(val, torch.Tensor) or val.ndim == 0:
            continue
        if not isinstance(val.shape[0], torch.SymInt):
            raise ProgramError(f"input {key!r} was exported with a fixed batch size of "
                               f"{val.shape[0]}; estimators call the model with many batch "
                               f"sizes, so the batch dimension must be dynamic: {EXPORT_HINT}",
                               "load")


def _inputs(args: dict[str, Any]) -> dict[str, Any]:
    import torch

    inputs = args.get("inputs")
    if not isinstance(inputs, dict) or not all(isinstance(v, torch.Tensor)
                                               for v in inputs.values()):
        raise ProgramError("'inputs' must be a dict of tensors keyed by modality name")
    return inputs


def _op_logits(model: Any, args: dict[str, Any]) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        return {"logits": model(_inputs(args))}


def _op_embed(model: Any, args: dict[str, Any]) -> dict[str, Any]:
    inputs = _inputs(args)
    model.check_inputs(inputs)
    return model.embed(inputs)


def _op_gradients(model: Any, args: dict[str, Any]) -> dict[str, Any]:
    """d output[target] / d features, per modality (feature space: embeddings for tokens)."""
    import torch

    from estimators.model import apply_output, select_target

    inputs = _inputs(args)
    model.check_inputs(inputs)
    target = args.get("target", 0)
    if not isinstance(target, (int, torch.Tensor)):
        raise ProgramError("'target' must be an int or an int tensor [B]")
    features = {k: v.detach().clone().requires_grad_(True)
                for k, v in model.embed(inputs).items()}
    out = apply_output(model.forward_embedded(inputs, features), args.get("output", "logits"))
    names = list(features)
    grads = torch.autograd.grad(select_target(out, target).sum(), [features[n] for n in names])
    return dict(zip(names, grads, strict=True))


def _op_estimator(model: Any, args: dict[str, Any]) -> Any:
    kwargs = dict(args)
    name = kwargs.pop("name", None)
    if name not in ESTIMATORS:
        raise ProgramError(f"estimator {name!r} is not allowed; allowed: {sorted(ESTIMATORS)}",
                           "op")
    if isinstance(kwargs.get("dtype"), str):  # a torch dtype travels as its name
        import torch

        dtype = getattr(torch, kwargs["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise ProgramError(f"unknown dtype {kwargs['dtype']!r}; use e.g. 'float16'")
        kwargs["dtype"] = dtype
    module_name, _, function_name = name.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ProgramError(f"estimator {name!r} is not available in this installation",
                           "op") from exc
    return function(model, **kwargs)


_OPS = {"logits": _op_logits, "embed": _op_embed, "gradients": _op_gradients,
        "estimator": _op_estimator}


# -- serving ----------------------------------------------------------------------------------

def serve(proto_in: int, proto_out: int, program_fd: int, config: dict[str, Any],
          env_names: list[str]) -> None:
    """Confine this process, load the program, answer requests until the parent hangs up."""
    report = confine(config)
    started = time.monotonic()

    import torch

    from backend.services import wire

    torch.set_num_threads(int(config.get("threads", 1)))
    max_request = int(config["max_request_bytes"])
    try:
        header, _ = wire.read_frame(proto_in, max_bytes=max_request)
        program = LoadedProgram.load(os.fdopen(program_fd, "rb"), header["spec"])
    except wire.PeerClosed:
        return
    except ProgramError as exc:
        wire.write_frame(proto_out, {"ok": False, "kind": "load", "error": str(exc),
                                     "sandbox": report}, {})
        return
    except BaseException as exc:  # the program's own code may raise anything while loading
        wire.write_frame(proto_out, {"ok": False, "kind": "load", "sandbox": report,
                                     "error": f"could not load the program: "
                                              f"{type(exc).__name__}: {exc}"[:2000]}, {})
        return
    report.update(pid=os.getpid(), load_s=round(time.monotonic() - started, 4),
                  env=env_names)
    wire.write_frame(proto_out, {"ok": True, "ready": True, "sandbox": report}, {})

    while True:
        try:
            header, tensors = wire.read_frame(proto_in, max_bytes=max_request)
        except wire.PeerClosed:
            return
        request_id = header.get("id")
        try:
            args = wire.unpack(header.get("args", {}), tensors)
            result = program.run(str(header.get("op")), args)
            tree, out = wire.pack(result)
            frame = wire.encode_frame({"id": request_id, "ok": True, "result": tree}, out)
        except ProgramError as exc:
            frame = wire.encode_frame({"id": request_id, "ok": False, "kind": exc.kind,
                                       "error": str(exc)}, {})
        except MemoryError:
            frame = wire.encode_frame({"id": request_id, "ok": False, "kind": "limit",
                                       "error": "the model ran out of its memory limit "
                                                f"({config.get('memory_mb')} MiB)"}, {})
        except Exception as exc:
            traceback.print_exc()
            kind = "limit" if "can't allocate memory" in str(exc) else "model"
            frame = wire.encode_frame({"id": request_id, "ok": False, "kind": kind,
                                       "error": f"{type(exc).__name__}: {exc}"[:2000]}, {})
        wire.write_all(proto_out, frame)


def _host_child(control: socket.socket, fds: list[int], config: dict[str, Any],
                env_names: list[str]) -> None:
    """In a freshly forked child: drop everything of the zygote, become a host, serve."""
    code = 1
    try:
        control.close()  # untrusted code must never reach the zygote's control socket
        proto_in, proto_out, program_fd, log_fd = fds
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        keep = {0, 1, 2, proto_in, proto_out, program_fd}
        for fd in map(int, os.listdir("/proc/self/fd")):
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        workdir = config["workdir"]
        os.chdir(workdir)
        os.environ.update(HOME=workdir, TMPDIR=workdir)
        serve(proto_in, proto_out, program_fd, config, env_names)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


PRELOAD = ("torch.export", "torch._export.serde.serialize", "torch.export._trace",
           "torch._inductor.sizevars", "sympy.tensor.tensor", "estimators.model",
           "backend.services.wire")
"""Imported once by the zygote: what a host's first ``torch.export.load`` would import."""


def zygote(control_fd: int) -> None:
    """Import torch and the export loader once, then fork one host per spawn request.

    A host forked from here starts in well under a second instead of paying torch's import
    (seconds of CPU) every time. The zygote runs only crosslens code (it never reads a
    program); each child confines itself before it touches one. Requests on the control
    socket (SOCK_SEQPACKET, JSON): ``spawn`` with four fds (requests in, replies out, the
    program, the log) -> ``{"pid"}``; ``status`` of a pid -> ``{"status"}`` (exit code, or
    minus the signal), once the child has ended.
    """
    env_names = sorted(os.environ)  # as the parent passed it, before torch adds its own
    control = socket.socket(fileno=control_fd)
    import torch

    for module in PRELOAD:
        importlib.import_module(module)
    children: set[int] = set()
    statuses: dict[int, int] = {}
    torch.set_num_threads(1)
    control.sendall(b'{"ready": true}')
    while True:
        _reap(children, statuses)
        if not select.select([control], [], [], 1.0)[0]:
            continue
        message, fds, _flags, _addr = socket.recv_fds(control, 1 << 16, 4)
        if not message:  # the parent is gone; hosts end when their pipes close
            os._exit(0)  # skip interpreter teardown: nothing to flush, and it takes seconds
        request = json.loads(message)
        if request.get("op") == "spawn" and len(fds) == 4:
            pid = os.fork()
            if pid == 0:
                _host_child(control, fds, request["config"], env_names)
            children.add(pid)
            reply: dict[str, Any] = {"pid": pid}
        elif request.get("op") == "status":
            pid = int(request["pid"])
            deadline = time.monotonic() + 2.0
            while pid in children and time.monotonic() < deadline:
                time.sleep(0.01)
                _reap(children, statuses)
            reply = {"status": statuses.pop(pid, None)}
        else:
            reply = {"error": f"bad zygote request {request.get('op')!r}"}
        for fd in fds:
            os.close(fd)
        control.sendall(json.dumps(reply).encode())


def _reap(children: set[int], statuses: dict[int, int]) -> None:
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)
            statuses[pid] = os.waitstatus_to_exitcode(status)
    while len(statuses) > 256:  # nobody asked: forget the oldest
        statuses.pop(next(iter(statuses)))


if __name__ == "__main__":
    zygote(int(sys.argv[1]))
