"""Framing between the API side and a sandbox host: JSON + safetensors, never pickle.

A frame is ``MAGIC | uint32 json_len | uint64 blob_len | json | blob`` (big-endian). The JSON
header carries everything that is not a tensor; the blob is a safetensors file holding the
tensors, which the header refers to as ``{"__tensor__": "t0"}``. Both halves are parsed by
code that cannot execute anything (``json`` and ``safetensors``), so the parent can read a
reply written by a hostile program without risk. Readers bound the frame size *before*
reading the body, and the parent validates every tensor's dtype and every reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import struct
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

MAGIC = b"CLX1"
_PREFIX = struct.Struct(">4sIQ")
MAX_JSON_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 16
TENSOR_KEY = "__tensor__"
ALLOWED_DTYPES: frozenset[torch.dtype] = frozenset({
    torch.float64, torch.float32, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
})


class WireError(Exception):
    """A frame broke the protocol (bad magic, too large, bad reference, odd dtype)."""


class PeerClosed(WireError):
    """The other side closed its end (for the parent: the host died)."""


class FrameTimeout(WireError):
    """No complete frame arrived before the deadline."""


# -- values <-> (json, tensors) ---------------------------------------------------------------

def pack(value: Any) -> tuple[Any, dict[str, Tensor]]:
    """Split a tree of dicts/lists/scalars/tensors into JSON and a flat tensor dict."""
    tensors: dict[str, Tensor] = {}

    def walk(v: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise WireError(f"value nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, Tensor):
            name = f"t{len(tensors)}"
            # own, contiguous storage: safetensors refuses views that share memory
            tensors[name] = v.detach().to("cpu").contiguous().clone()
            return {TENSOR_KEY: name}
        if isinstance(v, np.ndarray):
            return walk(torch.from_numpy(np.ascontiguousarray(v)), depth)
        if isinstance(v, np.generic):
            return v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, Mapping):
            out = {}
            for k, item in v.items():
                if not isinstance(k, str):
                    raise WireError(f"dictionary keys must be strings, got {type(k).__name__}")
                out[k] = walk(item, depth + 1)
            return out
        if isinstance(v, (list, tuple)):
            return [walk(item, depth + 1) for item in v]
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return walk({f.name: getattr(v, f.name) for f in dataclasses.fields(v)}, depth)
        if hasattr(v, "model_dump"):  # pydantic models
            return walk(v.model_dump(mode="python"), depth)
        raise WireError(f"cannot send a value of type {type(v).__name__}; only tensors, "
                        "arrays, numbers, strings, lists and string-keyed dicts travel")

    return walk(value, 0), tensors


def unpack(tree: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of ``pack``; every tensor reference must exist and be used once at most."""
    used: set[str] = set()

    def walk(v: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise WireError(f"value nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, dict):
            if TENSOR_KEY in v:
                name = v[TENSOR_KEY]
                if len(v) != 1 or not isinstance(name, str) or name not in tensors:
                    raise WireError(f"bad tensor reference {v!r}")
                if name in used:
                    raise WireError(f"tensor {name!r} referenced twice")
                used.add(name)
                return tensors[name]
            return {str(k): walk(item, depth + 1) for k, item in v.items()}
        if isinstance(v, list):
            return [walk(item, depth + 1) for item in v]
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise WireError(f"unexpected JSON value of type {type(v).__name__}")

    out = walk(tree, 0)
    unused = set(tensors) - used
    if unused:
        raise WireError(f"frame carries tensors nobody refers to: {sorted(unused)[:5]}")
    return out


# -- frames -----------------------------------------------------------------------------------

def encode_frame(header: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> bytes:
    body = json.dumps(header, separators=(",", ":")).encode()
    if len(body) > MAX_JSON_BYTES:
        raise WireError(f"JSON header of {len(body)} bytes exceeds {MAX_JSON_BYTES}")
    blob = save_safetensors(dict(tensors)) if tensors else b""
    return _PREFIX.pack(MAGIC, len(body), len(blob)) + body + blob


def write_all(fd: int, data: bytes, deadline: float | None = None) -> None:
    """Write ``data``; with a deadline, ``fd`` must be non-blocking and a stuck reader
    raises ``FrameTimeout`` instead of blocking the caller forever."""
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not poller.poll(wait * 1000):
                raise FrameTimeout("the other side stopped reading")
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue
        except BrokenPipeError as exc:
            raise PeerClosed("the other side closed the pipe") from exc


def write_frame(fd: int, header: Mapping[str, Any], tensors: Mapping[str, Tensor],
                deadline: float | None = None) -> None:
    write_all(fd, encode_frame(header, tensors), deadline)


def read_frame(fd: int, *, max_bytes: int,
               deadline: float | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read one frame from ``fd``; refuse frames over ``max_bytes`` before reading them."""
    magic, json_len, blob_len = _PREFIX.unpack(_read_exact(fd, _PREFIX.size, deadline))
    if magic != MAGIC:
        raise WireError("bad frame magic; the other side does not speak this protocol")
    if json_len > MAX_JSON_BYTES or json_len + blob_len > max_bytes:
        raise WireError(f"frame of {json_len + blob_len} bytes exceeds the limit of "
                        f"{max_bytes} bytes")
    try:
        header = json.loads(_read_exact(fd, json_len, deadline))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"frame header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise WireError("frame header must be a JSON object")
    tensors: dict[str, Tensor] = {}
    if blob_len:
        try:
            tensors = load_safetensors(_read_exact(fd, blob_len, deadline))
        except WireError:
            raise
        except Exception as exc:  # safetensors raises its own error types on bad input
            raise WireError(f"frame tensors are not valid safetensors: {exc}") from exc
    for name, t in tensors.items():
        if t.dtype not in ALLOWED_DTYPES:
            raise WireError(f"tensor {name!r} has unsupported dtype {t.dtype}")
    return header, tensors


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    remaining = n
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not poller.poll(wait * 1000):
                raise FrameTimeout("no reply before the deadline")
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise PeerClosed("the other side closed the pipe")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
