"""A corpus of hostile uploads: each is refused cleanly (or, for .pt2, stored unopened),
never runs code in the API process, and leaves no files and no rows behind."""

from __future__ import annotations

import builtins
import io
import json
import stat
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.core.config import Settings
from backend.db import DatasetRecord, ModelRecord
from backend.main import create_app
from tests.backend.factories import (
    dataset_zip,
    model_files,
    project,
    stored_files,
    tiny_spec,
    upload_dataset,
    upload_model,
)


class _Canary:
    """Unpickling this opens (creates) the canary file: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return builtins.open, (str(self.path), "w")


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[FastAPI, TestClient, Settings]]:
    """An app with 1 MB upload and 1 MB unzipped limits."""
    settings = Settings(data_dir=tmp_path / "small", register_demos=False, max_upload_mb=1,
                        max_unzipped_mb=1)
    app = create_app(settings)
    with TestClient(app) as client:
        yield app, client, settings
    app.state.db.dispose()


def _nothing_left(api: FastAPI, settings: Settings) -> None:
    assert stored_files(settings.data_dir) == []
    with api.state.db.session() as session:
        for table in (ModelRecord, DatasetRecord):
            assert session.scalar(select(func.count()).select_from(table)) == 0


def _pickled(canary: Path) -> bytes:
    import pickle

    return pickle.dumps({"weight": _Canary(canary)}, protocol=4)


def _torch_saved(canary: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": _Canary(canary)}, buf)
    return buf.getvalue()


def _torchscript_like(canary: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("m/data.pkl", _pickled(canary))
        zf.writestr("m/constants.pkl", _pickled(canary))
        zf.writestr("m/code/__torch__.py", "def forward(self, x): return x\n")
    return buf.getvalue()


def _onnx_like(_canary: Path) -> bytes:
    return b"\x08\x07\x12\x07pytorch\x1a\x032.1:" + b"\x00" * 64


@pytest.mark.parametrize(("make", "field", "says"), [
    (_pickled, "weights", "pickle"),
    (_torch_saved, "weights", "torch.save"),
    (_torchscript_like, "weights", "TorchScript"),
    (_onnx_like, "weights", "ONNX"),
    (_pickled, "program", "pickle"),
    (_torch_saved, "program", "torch.save"),
])
def test_pickles_torchscript_and_onnx_are_refused_unread(
        api: FastAPI, client: TestClient, settings: Settings, tmp_path: Path, make,
        field: str, says: str) -> None:
    canary = tmp_path / "canary"
    pid, headers = project(api)
    companion = ("config", model_files()[1]) if field == "weights" else (
        "spec", tiny_spec().model_dump_json().encode())
    response = upload_model(client, headers, pid, files={
        field: ("model.bin", make(canary)), companion[0]: ("c.json", companion[1])})
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert says in detail and "safetensors" in detail and "torch.export" in detail
    assert not canary.exists()
    _nothing_left(api, settings)


def test_a_pickle_sent_as_a_dataset_is_refused_unread(
        api: FastAPI, client: TestClient, settings: Settings, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    pid, headers = project(api)
    response = upload_dataset(client, headers, pid, _pickled(canary))
    assert response.status_code == 415 and ".zip" in response.json()["detail"]
    assert not canary.exists()
    _nothing_left(api, settings)


def test_crafted_pt2_is_stored_but_never_loaded_in_process(
        api: FastAPI, client: TestClient, settings: Settings, tmp_path: Path) -> None:
    """torch.export.load would fall back to full unpickling of this member: the API must
    only store it (the sandbox host is the one place that opens programs)."""
    canary = tmp_path / "canary"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x/archive_format", "pt2")
        zf.writestr("x/archive_version", "0")
        zf.writestr("x/models/model.json", "{}")
        zf.writestr("x/data/sample_inputs/model.pt", _torch_saved(canary))
    pid, headers = project(api)
    response = upload_model(client, headers, pid, files={
        "program": ("evil.pt2", buf.getvalue()),
        "spec": ("spec.json", tiny_spec().model_dump_json())})
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]
    assert client.get(f"/api/v1/models/{model_id}", headers=headers).status_code == 200
    assert client.get("/api/v1/models", headers=headers).status_code == 200
    assert not canary.exists()


def _zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps({
            "format": "crosslens-dataset", "version": 1, "n": 1,
            "modalities": {"a": {"file": "a.npy"}}, "labels": {"file": "l.npy"}}))
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize(("entries", "says"), [
    ([("../../evil.npy", b"x")], "outside the archive"),
    ([("/etc/evil.npy", b"x")], "outside the archive"),
    ([("a\\..\\..\\evil.npy", b"x")], "outside the archive"),
    ([_symlink("a.npy", "/etc/passwd")], "symbolic link"),
])
def test_zip_slip_and_links_are_refused(api: FastAPI, client: TestClient,
                                        settings: Settings, tmp_path: Path,
                                        entries: list, says: str) -> None:
    pid, headers = project(api)
    response = upload_dataset(client, headers, pid, _zip_with(entries))
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]
    _nothing_left(api, settings)
    assert not (tmp_path / "evil.npy").exists()


def _bomb(compression: int, size: int = 8 << 20) -> bytes:
    """A dataset whose image member unpacks to ``size`` bytes of zeros."""
    return dataset_zip(compression=compression,
                       manifest={"modalities": {"image": {"file": "bomb.npy"}}},
                       extra={"bomb.npy": b"\x00" * size})


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
def test_zip_bombs_are_stopped_while_decompressing(
        small: tuple[FastAPI, TestClient, Settings], compression: int) -> None:
    api, client, settings = small
    data = _bomb(compression)
    assert len(data) < 100_000  # far more than 80:1, under the 1 MB upload limit
    pid, headers = project(api)
    response = upload_dataset(client, headers, pid, data)
    assert response.status_code == 413, response.text
    assert "zip bomb" in response.json()["detail"] and "1 MB" in response.json()["detail"]
    _nothing_left(api, settings)


def test_zip_bomb_with_lying_size_headers_is_refused(
        small: tuple[FastAPI, TestClient, Settings]) -> None:
    """Headers claim 100 bytes; the stream is counted, not the headers."""
    api, client, settings = small
    data = bytearray(_bomb(zipfile.ZIP_DEFLATED))
    name = b"bomb.npy"
    local = data.find(b"PK\x03\x04")
    while local != -1:
        name_len = struct.unpack_from("<H", data, local + 26)[0]
        if data[local + 30: local + 30 + name_len] == name:
            struct.pack_into("<I", data, local + 22, 100)
        local = data.find(b"PK\x03\x04", local + 4)
    central = data.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46: central + 46 + name_len] == name:
            struct.pack_into("<I", data, central + 24, 100)
        central = data.find(b"PK\x01\x02", central + 4)
    pid, headers = project(api)
    response = upload_dataset(client, headers, pid, bytes(data))
    assert response.status_code in (413, 422), response.text
    _nothing_left(api, settings)


def test_oversized_upload_is_refused_with_the_limit(
        small: tuple[FastAPI, TestClient, Settings]) -> None:
    api, client, settings = small
    pid, headers = project(api)
    response = upload_dataset(client, headers, pid, b"PK\x03\x04" + b"\x00" * (2 << 20))
    assert response.status_code == 413
    assert "1 MB" in response.json()["detail"]
    _nothing_left(api, settings)


def test_oversized_chunked_upload_without_length_is_cut_off(
        small: tuple[FastAPI, TestClient, Settings]) -> None:
    api, client, settings = small
    pid, headers = project(api)
    boundary = "b0undary"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"project_id\"\r\n\r\n"
               f"{pid}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               "filename=\"d.zip\"\r\n\r\n").encode()
        for _ in range(40):
            yield b"\x00" * (64 << 10)

    response = client.post("/api/v1/datasets", content=body(), headers={
        **headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413
    _nothing_left(api, settings)


def test_truncated_upload_is_refused_and_leaves_nothing(
        api: FastAPI, client: TestClient, settings: Settings) -> None:
    pid, headers = project(api)
    weights, config = model_files()
    boundary = "cut"
    full = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"project_id\"\r\n\r\n"
            f"{pid}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n"
            f"m\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"config\"; "
            f"filename=\"c.json\"\r\n\r\n").encode() + config + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"weights\"; "
        f"filename=\"w.safetensors\"\r\n\r\n").encode() + weights + \
        f"\r\n--{boundary}--\r\n".encode()
    response = client.post("/api/v1/models", content=full[: len(full) // 2], headers={
        **headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 400 and "truncated" in response.json()["detail"]
    _nothing_left(api, settings)
    complete = client.post("/api/v1/models", content=full, headers={
        **headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert complete.status_code == 201, complete.text


@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/datasets"])
def test_wrong_content_type_is_415(api: FastAPI, client: TestClient, settings: Settings,
                                   path: str) -> None:
    pid, headers = project(api)
    response = client.post(path, json={"project_id": pid, "name": "x"}, headers=headers)
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]
    _nothing_left(api, settings)


def test_unexpected_form_fields_are_refused(api: FastAPI, client: TestClient,
                                            settings: Settings) -> None:
    pid, headers = project(api)
    response = client.post("/api/v1/datasets", headers=headers,
                           data={"project_id": str(pid)},
                           files={"../../etc/passwd": ("x", b"x")})
    assert response.status_code == 422 and "unexpected form field" in response.json()["detail"]
    _nothing_left(api, settings)
