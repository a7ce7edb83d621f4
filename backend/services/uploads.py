"""Safe uploads: streamed multipart bodies with a hard byte limit, file-type sniffing by
magic bytes, and a defensive reader for dataset zips.

Nothing here ever unpickles: pickles, ``torch.save`` archives, TorchScript and ONNX are
recognised by their first bytes or their zip member names and refused with a message that
says how to export instead. ``.pt2`` programs are recognised the same way and only stored
(loading one runs pickle, so that happens in the sandbox host, never in the API process).

Dataset zips are read member by member into private temp files (never by their own names,
so no path in the archive can escape), with the uncompressed bytes counted while the
decompressor runs: a zip bomb is stopped at the limit whatever its headers claim, in any
compression method (deflate, bzip2, lzma). Tensors are read with ``safetensors`` or
``np.load(allow_pickle=False)`` only.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import safetensors
import safetensors.torch
import torch
from fastapi import HTTPException, Request, status
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

MB = 1 << 20
MAX_TEXT_FIELD = 4 * MB
MAX_PARTS = 16
MAX_ZIP_MEMBERS = 1000
MAX_MANIFEST = 1 * MB
MAX_CLASSES = 10_000
MULTIPART_FORM = "multipart/form-data"


# -- streamed multipart ---------------------------------------------------------------------


@dataclass
class ReceivedFile:
    """A file part written to scratch while streaming, hashed on the way in."""

    path: Path
    sha256: str
    size: int
    filename: str


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, ReceivedFile] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        """A field sent either as a text field or as a small file part (e.g. a .json)."""
        if name in self.fields:
            return self.fields[name]
        if name in self.files:
            received = self.files[name]
            if received.size > MAX_TEXT_FIELD:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                    f"{name!r} is larger than {MAX_TEXT_FIELD // MB} MB")
            try:
                return received.path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                    f"{name!r} must be UTF-8 JSON text") from exc
        return None


def too_large(limit_bytes: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"upload exceeds the limit of {limit_bytes / MB:g} MB (CROSSLENS_MAX_UPLOAD_MB); "
        "send a smaller file or ask the operator to raise the limit")


class _FormWriter:
    """python-multipart callbacks that route each part to a text buffer or a scratch file."""

    def __init__(self, scratch: Path, file_fields: set[str], text_fields: set[str]) -> None:
        self.scratch = scratch
        self.file_fields, self.text_fields = file_fields, text_fields
        self.form = ReceivedForm()
        self.finished = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._filename: str | None = None
        self._text = bytearray()
        self._fh: BinaryIO | None = None
        self._hash: Any = None
        self._size = 0
        self._parts = 0

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._add("_header_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("_header_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _add(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise _bad_request(f"too many form parts (at most {MAX_PARTS})")
        self._headers, self._name, self._filename = {}, None, None

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        raw_name = options.get(b"name")
        if raw_name is None:
            raise _bad_request("a form part has no name")
        name = raw_name.decode("utf-8", "replace")
        allowed = sorted(self.file_fields | self.text_fields)
        if name not in allowed:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"unexpected form field {name!r}; this endpoint takes {allowed}")
        if name in self.form.fields or name in self.form.files:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"form field {name!r} was sent twice")
        self._name = name
        filename = options.get(b"filename")
        self._filename = filename.decode("utf-8", "replace") if filename is not None else None
        if name in self.file_fields and (self._filename is not None
                                         or name not in self.text_fields):
            # Stored under a fixed name: the client's file name never becomes a path.
            self._fh = open(self.scratch / f"part-{self._parts}", "wb")  # noqa: SIM115
            self._hash, self._size = hashlib.sha256(), 0
        else:
            self._text = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._fh is not None:
            self._fh.write(chunk)
            self._hash.update(chunk)
            self._size += len(chunk)
        else:
            self._text += chunk
            if len(self._text) > MAX_TEXT_FIELD:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                                    f"text field {self._name!r} exceeds "
                                    f"{MAX_TEXT_FIELD // MB} MB")

    def _part_end(self) -> None:
        assert self._name is not None
        if self._fh is not None:
            self._fh.close()
            self.form.files[self._name] = ReceivedFile(
                path=Path(self._fh.name), sha256=self._hash.hexdigest(), size=self._size,
                filename=self._filename or "")
            self._fh = None
        else:
            try:
                self.form.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _bad_request(f"form field {self._name!r} is not UTF-8 text") from exc

    def _end(self) -> None:
        self.finished = True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _bad_request(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail)


async def receive_form(request: Request, scratch: Path, *, limit_bytes: int,
                       file_fields: set[str], text_fields: set[str]) -> ReceivedForm:
    """Stream a multipart body into ``scratch``: file parts become hashed temp files, text
    parts strings. The whole body is capped at ``limit_bytes`` (413 as soon as it is passed,
    before the rest is read); a truncated body is a 400. The caller owns ``scratch`` and
    removes it whatever happens."""
    content_type = request.headers.get("content-type", "")
    ctype, options = parse_options_header(content_type)
    if ctype != MULTIPART_FORM.encode() or not options.get(b"boundary"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            f"send a {MULTIPART_FORM} body (fields "
                            f"{sorted(file_fields | text_fields)}), not {content_type or 'none'}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit_bytes:
        raise too_large(limit_bytes)
    writer = _FormWriter(scratch, file_fields, text_fields)
    parser = MultipartParser(options[b"boundary"], writer.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit_bytes:
                raise too_large(limit_bytes)
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect as exc:
        raise _bad_request("the upload was interrupted; nothing was stored") from exc
    except HTTPException:
        raise
    except Exception as exc:  # python-multipart's parse errors
        raise _bad_request(f"malformed multipart body: {exc}") from exc
    finally:
        writer.close()
    if not writer.finished:
        raise _bad_request("the upload ended early (truncated body); nothing was stored — "
                           "send it again")
    return writer.form


# -- sniffing model files -------------------------------------------------------------------

EXPORT_HOWTO = (
    "Upload either (a) the weights as .safetensors "
    "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) with a JSON "
    "config naming a registered architecture, or (b) a torch.export program "
    "(torch.export.save(torch.export.export(model, (example_inputs,)), 'model.pt2')) as "
    "'program' with its ModelSpec JSON as 'spec'. See README, 'Upload formats'.")

REFUSALS = {
    "pickle": "this is a Python pickle (e.g. torch.save of a whole model); crosslens never "
              "unpickles uploads because unpickling can run arbitrary code",
    "torch_save": "this is a torch.save archive (pickle inside a zip); crosslens never "
                  "unpickles uploads because unpickling can run arbitrary code",
    "torchscript": "this is a TorchScript archive; loading TorchScript runs scripted code at "
                   "load time, so crosslens does not accept it",
    "onnx": "this is an ONNX model; crosslens explains PyTorch models and needs gradients "
            "through them, which ONNX files do not give",
    "numpy": "this is a .npy array, not model weights",
    "zip": "this is a zip archive that is neither a torch.export program nor weights",
    "dataset_zip": "this is a crosslens dataset zip; upload it under Datasets",
    "unknown": "this is not a recognised model file",
}


def sniff(path: Path) -> str:
    """What a file is, judged from its first bytes and (for zips) its member names only:
    ``safetensors``, ``pt2``, ``torch_save``, ``torchscript``, ``pickle``, ``onnx``,
    ``numpy``, ``dataset_zip``, ``zip`` or ``unknown``. Never parses pickles."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "unknown"
        tails = {n.rsplit("/", 1)[-1] for n in names}
        if "archive_format" in tails:
            return "pt2"
        if "constants.pkl" in tails or any(n.startswith("code/") or "/code/" in n
                                           for n in names):
            return "torchscript"
        if "data.pkl" in tails:
            return "torch_save"
        if "manifest.json" in names:
            return "dataset_zip"
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:6] == b"\x93NUMPY":
        return "numpy"
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if head[:1] == b"\x08" and (b"onnx" in head or b"pytorch" in head):
        return "onnx"
    return "unknown"


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= 100 * MB and n + 8 <= size and head[8:9] == b"{"


def refuse_model_file(kind: str, field_name: str, wanted: str) -> HTTPException:
    """415 for a file of the wrong kind, with what to send instead."""
    if kind == "pt2" and field_name == "weights":
        reason = "this is a torch.export program; send it as 'program' with a 'spec' JSON"
    elif kind == "safetensors" and field_name == "program":
        reason = "this is a safetensors weights file; send it as 'weights' with a 'config' JSON"
    else:
        reason = REFUSALS.get(kind, REFUSALS["unknown"])
    return HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                         f"'{field_name}' must be {wanted}: {reason}. {EXPORT_HOWTO}")


# -- dataset zips ---------------------------------------------------------------------------

FLOAT_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
INT_DTYPES = {torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8}
_ALLOWED_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                        zipfile.ZIP_LZMA}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass
class ParsedDataset:
    """A validated dataset: tensors normalised (floats → float32, ints → int64)."""

    name: str
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    ids: list[str] | None
    split: torch.Tensor | None
    kinds: dict[str, str]
    classes: list[str] | None
    description: str


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def _check_members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise _unprocessable(f"the zip has {len(infos)} entries; at most {MAX_ZIP_MEMBERS}")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if (name.startswith(("/", "\\")) or "\\" in name or re.match(r"^[A-Za-z]:", name)
                or ".." in parts or "\x00" in name):
            raise _unprocessable(f"zip entry {name!r} points outside the archive (absolute "
                                 "path or '..'); rebuild the zip with relative paths")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise _unprocessable(f"zip entry {name!r} is a symbolic link; only regular files "
                                 "are accepted")
        if info.flag_bits & 0x1:
            raise _unprocessable(f"zip entry {name!r} is encrypted; send an unencrypted zip")
        if info.compress_type not in _ALLOWED_COMPRESSION:
            raise _unprocessable(f"zip entry {name!r} uses an unsupported compression method "
                                 f"({info.compress_type}); use deflate or store")
        if name in members:
            raise _unprocessable(f"zip entry {name!r} appears twice")
        if not info.is_dir():
            members[name] = info
    return members


class _Budget:
    """Uncompressed bytes left, counted while decompressing (headers are not trusted)."""

    def __init__(self, total: int, per_member: int) -> None:
        self.left, self.per_member = total, per_member
        self.total = total

    def extract(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> Path:
        written = 0
        try:
            with zf.open(info) as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 16):
                    written += len(chunk)
                    if written > self.per_member:
                        raise HTTPException(
                            status.HTTP_413_CONTENT_TOO_LARGE,
                            f"zip entry {info.filename!r} unpacks to more than "
                            f"{self.per_member / MB:g} MB (CROSSLENS_MAX_UNZIPPED_MB); "
                            "refusing a possible zip bomb")
                    if written > self.left:
                        raise HTTPException(
                            status.HTTP_413_CONTENT_TOO_LARGE,
                            f"the zip unpacks to more than {self.total / MB:g} MB in all "
                            "(CROSSLENS_MAX_UNZIPPED_MB); refusing a possible zip bomb")
                    out.write(chunk)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
            raise _unprocessable(f"zip entry {info.filename!r} is corrupt: {exc}") from exc
        except Exception as exc:  # zlib / bz2 / lzma decompression errors
            if isinstance(exc, HTTPException):
                raise
            raise _unprocessable(f"zip entry {info.filename!r} cannot be decompressed: "
                                 f"{exc}") from exc
        self.left -= written
        return dest


def _ref(manifest: dict[str, Any], where: str, value: Any) -> tuple[str, str | None]:
    if not isinstance(value, dict) or not isinstance(value.get("file"), str):
        raise _unprocessable(f"manifest {where} must be an object with 'file' (and 'key' for "
                             f".safetensors), got {value!r}")
    key = value.get("key")
    if key is not None and not isinstance(key, str):
        raise _unprocessable(f"manifest {where}: 'key' must be a string")
    return value["file"], key


def _load_tensor(path: Path, member: str, key: str | None) -> torch.Tensor:
    if member.endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise _unprocessable(f"{member}: not a plain .npy array (object arrays and "
                                 f"pickles are refused): {exc}") from exc
        except OSError as exc:
            raise _unprocessable(f"{member}: cannot read .npy: {exc}") from exc
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiub":
            raise _unprocessable(f"{member}: dtype {getattr(array, 'dtype', '?')} is not "
                                 "numeric")
        if array.dtype.kind == "b":
            array = array.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(array))
    if member.endswith(".safetensors"):
        if key is None:
            raise _unprocessable(f"{member}: the manifest must name the tensor 'key'")
        try:
            with safetensors.safe_open(str(path), framework="pt") as st:
                if key not in st.keys():  # noqa: SIM118
                    raise _unprocessable(f"{member} has no tensor {key!r}; it has "
                                         f"{sorted(st.keys())[:20]}")
                return st.get_tensor(key)
        except (safetensors.SafetensorError, OSError) as exc:
            raise _unprocessable(f"{member}: not a valid .safetensors file: {exc}") from exc
    raise _unprocessable(f"{member}: tensors must be .safetensors or .npy files")


def _normalise(name: str, x: torch.Tensor, n: int) -> torch.Tensor:
    if x.ndim < 1 or x.shape[0] != n:
        raise _unprocessable(f"modality {name!r} has shape {list(x.shape)}; it needs {n} rows "
                             f"(manifest 'n'), one per instance")
    if x.ndim > 5:
        raise _unprocessable(f"modality {name!r} has {x.ndim} dimensions; at most 5 "
                             "(rows + 4)")
    if x.dtype in FLOAT_DTYPES:
        x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise _unprocessable(f"modality {name!r} contains NaN or infinite values")
        return x
    if x.dtype in INT_DTYPES:
        return x.to(torch.int64)
    raise _unprocessable(f"modality {name!r} has dtype {x.dtype}; use a float or integer "
                         "dtype")


def _guess_kind(x: torch.Tensor) -> str:
    if not x.is_floating_point():
        return "text"
    return {4: "image", 3: "timeseries"}.get(x.ndim, "tabular")


def read_dataset_zip(path: Path, scratch: Path, *, max_unzipped_bytes: int,
                     max_member_bytes: int | None = None) -> ParsedDataset:
    """Validate a dataset zip (DESIGN.md manifest) and return its tensors. Every problem is
    an ``HTTPException`` (413 for size limits, 415 for a non-zip, 422 otherwise)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "a dataset must be a .zip with manifest.json at its root "
                            f"(see README, 'Upload formats'): {exc}") from exc
    with zf:
        members = _check_members(zf)
        budget = _Budget(max_unzipped_bytes, max_member_bytes or max_unzipped_bytes)
        if "manifest.json" not in members:
            raise _unprocessable("the zip has no manifest.json at its root")
        if members["manifest.json"].file_size > MAX_MANIFEST:
            raise _unprocessable("manifest.json is larger than 1 MB")
        manifest_path = budget.extract(zf, members["manifest.json"], scratch / "manifest")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _unprocessable(f"manifest.json is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != "crosslens-dataset":
            raise _unprocessable("manifest.json must be an object with "
                                 "\"format\": \"crosslens-dataset\"")
        if manifest.get("version") != 1:
            raise _unprocessable("manifest 'version' must be 1")
        n = manifest.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise _unprocessable("manifest 'n' must be a positive integer (number of rows)")
        modalities = manifest.get("modalities")
        if not isinstance(modalities, dict) or not modalities or len(modalities) > 16:
            raise _unprocessable("manifest 'modalities' must map 1..16 modality names to "
                                 "{file, key}")

        extracted: dict[str, Path] = {}

        def tensor(where: str, ref: Any) -> torch.Tensor:
            member, key = _ref(manifest, where, ref)
            if member not in members:
                raise _unprocessable(f"manifest {where} names {member!r}, which is not in the "
                                     "zip")
            if member not in extracted:
                extracted[member] = budget.extract(zf, members[member],
                                                   scratch / f"member-{len(extracted)}")
            return _load_tensor(extracted[member], member, key)

        inputs: dict[str, torch.Tensor] = {}
        kinds: dict[str, str] = {}
        for mod_name, ref in modalities.items():
            if not _NAME.match(mod_name):
                raise _unprocessable(f"modality name {mod_name!r} must be an identifier")
            inputs[mod_name] = _normalise(mod_name, tensor(f"modalities.{mod_name}", ref), n)
            kind = ref.get("kind") if isinstance(ref, dict) else None
            kinds[mod_name] = kind if kind in ("image", "text", "timeseries", "tabular",
                                               "audio") else _guess_kind(inputs[mod_name])

        labels = tensor("labels", manifest.get("labels"))
        if labels.ndim != 1 or labels.shape[0] != n:
            raise _unprocessable(f"labels have shape {list(labels.shape)}; they must be 1-D "
                                 f"with n={n} entries")
        if labels.is_floating_point() or labels.dtype not in INT_DTYPES:
            raise _unprocessable(f"labels must be integer class indices, not {labels.dtype}")
        labels = labels.to(torch.int64)
        if labels.min() < 0 or labels.max() >= MAX_CLASSES:
            raise _unprocessable(f"labels must lie in 0..{MAX_CLASSES - 1}")

        split = None
        if manifest.get("split") is not None:
            split = tensor("split", manifest["split"])
            if split.ndim != 1 or split.shape[0] != n or split.is_floating_point():
                raise _unprocessable(f"split must be 1-D integers with n={n} entries")
            split = split.to(torch.int64)

        ids = None
        if manifest.get("ids") is not None:
            member, _ = _ref(manifest, "ids", manifest["ids"])
            if member not in members:
                raise _unprocessable(f"manifest ids names {member!r}, which is not in the zip")
            ids_path = budget.extract(zf, members[member], scratch / "ids")
            try:
                ids = json.loads(ids_path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise _unprocessable(f"{member}: ids must be a JSON list of strings") from exc
            if (not isinstance(ids, list) or len(ids) != n
                    or not all(isinstance(i, str) and len(i) <= 128 for i in ids)):
                raise _unprocessable(f"{member}: ids must be a JSON list of n={n} strings "
                                     "(each at most 128 characters)")

        classes = manifest.get("classes")
        if classes is not None and (not isinstance(classes, list)
                                    or not all(isinstance(c, str) for c in classes)
                                    or len(classes) <= int(labels.max())):
            raise _unprocessable("manifest 'classes' must be a list of class names covering "
                                 "every label")
        name = manifest.get("name")
        description = manifest.get("description", "")
        return ParsedDataset(
            name=str(name)[:128] if name else "dataset", inputs=inputs, labels=labels,
            ids=ids, split=split, kinds=kinds, classes=classes,
            description=str(description)[:2000])


def save_normalised(dataset: ParsedDataset, dest: Path) -> None:
    """All tensors of a validated dataset in one ``.safetensors`` (ids in its metadata):
    what every loader reads, so the zip is parsed only once."""
    tensors = {f"input.{k}": v.contiguous() for k, v in dataset.inputs.items()}
    tensors["labels"] = dataset.labels.contiguous()
    if dataset.split is not None:
        tensors["split"] = dataset.split.contiguous()
    metadata = {"ids": json.dumps(dataset.ids)} if dataset.ids is not None else None
    safetensors.torch.save_file(tensors, str(dest), metadata=metadata)
