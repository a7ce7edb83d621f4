"""The ``.pt2`` sandbox: real host processes, real exported programs, a real hostile file.

Each host start imports torch and the export deserialiser (a few CPU seconds), so the tests
share one warm host for the toy CNN+text model and start others only where the behaviour
needs a fresh one (hostile file, idle stop, load refusals, memory limit).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.func import jacrev, vmap

from backend.core.config import Settings
from backend.services import wire
from backend.services.sandbox import (
    SandboxedModel,
    SandboxError,
    SandboxInputError,
    SandboxLimits,
    SandboxPool,
    inspect_pt2,
)
from backend.workers.sandbox_host import LoadedProgram, ProgramError
from estimators.model import ModalitySpec, ModelSpec, MultimodalModel
from tests.fixtures.attention_models import sdpa_transformer
from tests.fixtures.models import additive, cnn_text
from tests.fixtures.pt2 import export_pt2, hostile_pt2

FAST = SandboxLimits(call_timeout_s=60, start_timeout_s=120)


@pytest.fixture(scope="module")
def eager() -> MultimodalModel:
    return cnn_text()


@pytest.fixture(scope="module")
def cnn_program(tmp_path_factory: pytest.TempPathFactory, eager: MultimodalModel) -> Path:
    return export_pt2(eager, tmp_path_factory.mktemp("pt2") / "cnn_text.pt2")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxPool]:
    """One pool (one zygote) for the module, created while this process holds secrets."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CROSSLENS_DATABASE_URL", "postgresql://admin:hunter2@db/crosslens")
        env.setenv("CROSSLENS_ADMIN_TOKEN", "secret-token")
        pool = SandboxPool(Settings(data_dir=tmp_path_factory.mktemp("data")), FAST)
        yield pool
        pool.shutdown()


@pytest.fixture(scope="module")
def sandboxed(pool: SandboxPool, cnn_program: Path, eager: MultimodalModel) -> SandboxedModel:
    return pool.get(cnn_program, eager.spec)


# -- wire -------------------------------------------------------------------------------------

def _frame_through_pipe(data: bytes, max_bytes: int = 1 << 20):
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
        os.close(write_fd)
        write_fd = -1
        return wire.read_frame(read_fd, max_bytes=max_bytes, deadline=time.monotonic() + 5)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_wire_round_trips_nested_tensors_and_json_values() -> None:
    value = {"logits": torch.randn(3, 2), "maps": [torch.ones(2, dtype=torch.int64),
                                                   torch.zeros(1, dtype=torch.bool)],
             "meta": {"method": "ig", "steps": 8, "ok": True, "scale": 0.5, "none": None}}
    tree, tensors = wire.pack(value)
    header, out = _frame_through_pipe(wire.encode_frame({"result": tree}, tensors))
    back = wire.unpack(header["result"], out)
    assert torch.equal(back["logits"], value["logits"])
    assert [t.dtype for t in back["maps"]] == [torch.int64, torch.bool]
    assert back["meta"] == value["meta"]


def test_wire_refuses_an_oversized_frame_before_reading_its_body() -> None:
    frame = wire.encode_frame({"x": 1}, {"t": torch.zeros(1000)})
    with pytest.raises(wire.WireError, match="exceeds the limit"):
        _frame_through_pipe(frame[:16], max_bytes=100)  # only the prefix was sent


def test_wire_refuses_pickled_tensors_and_dangling_references() -> None:
    pickled = io.BytesIO()
    torch.save({"t": torch.zeros(2)}, pickled)
    body = b'{"result":{"__tensor__":"t"}}'
    frame = wire.MAGIC + len(body).to_bytes(4, "big") + len(pickled.getvalue()).to_bytes(8, "big")
    with pytest.raises(wire.WireError, match="not valid safetensors"):
        _frame_through_pipe(frame + body + pickled.getvalue())
    with pytest.raises(wire.WireError, match="bad tensor reference"):
        wire.unpack({"__tensor__": "missing"}, {})


# -- parity with eager ------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 5])
def test_logits_and_embeddings_equal_eager_exactly(sandboxed: SandboxedModel,
                                                   eager: MultimodalModel,
                                                   batch_size: int) -> None:
    inputs = eager.spec.example_inputs(batch_size, seed=batch_size)
    assert torch.equal(sandboxed.logits(inputs), eager(inputs))
    got, want = sandboxed.embed(inputs), eager.embed(inputs)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_embedding_gradients_equal_eager_exactly(sandboxed: SandboxedModel,
                                                 eager: MultimodalModel) -> None:
    inputs = eager.spec.example_inputs(4, seed=3)
    target = torch.tensor([0, 2, 1, 2])
    got = sandboxed.gradients(inputs, target, output="log_softmax")
    features = {k: v.clone().requires_grad_(True) for k, v in eager.embed(inputs).items()}
    out = torch.log_softmax(eager.forward_embedded(inputs, features), -1)
    out.gather(1, target[:, None]).sum().backward()
    assert got["text"].shape == (4, 6, 8)  # at the embedding output [B, T, D], not the ids
    for name, feature in features.items():
        assert torch.equal(got[name], feature.grad), name


def test_cross_hessian_through_the_unflattened_program_equals_eager(
        cnn_program: Path, eager: MultimodalModel) -> None:
    # The host's loading code, run here on the honest file this module exported itself.
    with open(cnn_program, "rb") as f:
        loaded = LoadedProgram.load(f, eager.spec.model_dump_json()).model
    inputs = eager.spec.example_inputs(3, seed=4)

    def cross_hessian(model: MultimodalModel) -> Tensor:
        feats = model.embed(inputs)

        def f(image: Tensor, text: Tensor, ids: Tensor) -> Tensor:
            one = {"image": image[None], "text": ids[None]}
            return model.forward_embedded(one, {"image": image[None], "text": text[None]})[0, 1]

        return vmap(jacrev(jacrev(f, argnums=0), argnums=1))(
            feats["image"], feats["text"], inputs["text"])

    want = cross_hessian(eager)
    assert want.abs().sum() > 0  # smooth model: a real, non-zero interaction block
    assert torch.equal(cross_hessian(loaded), want)


ESTIMATOR_CALLS = [
    ("estimators.ablation.ablate", {"drop": ["text"]}),
    ("estimators.interactions.cross_hessian", {"a": "image", "b": "text", "target": 1}),
    ("estimators.interactions.interaction_heatmap", {"a": "image", "b": "text", "target": 1}),
    ("estimators.attribution.attribute",
     {"target": 1, "method": "integrated_gradients", "n_steps": 8}),
]


def _same(got: Any, want: Any) -> bool:
    """Exact equality of result trees (tensors bit for bit)."""
    if isinstance(want, Tensor):
        return isinstance(got, Tensor) and torch.equal(got, want)
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(
            _same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            _same(g, w) for g, w in zip(got, want, strict=True))
    return got == want


@pytest.mark.parametrize(("name", "kwargs"), ESTIMATOR_CALLS, ids=[c[0] for c in ESTIMATOR_CALLS])
def test_estimators_run_in_the_host_exactly_as_in_process(
        sandboxed: SandboxedModel, eager: MultimodalModel, name: str,
        kwargs: dict[str, Any]) -> None:
    module_name, _, function_name = name.rpartition(".")
    function = getattr(pytest.importorskip(module_name), function_name)
    inputs = eager.spec.example_inputs(3, seed=5)
    got = sandboxed.estimator(name, inputs=inputs, **kwargs)
    # results travel as plain trees: dataclasses arrive as dicts of their fields
    want = wire.unpack(*wire.pack(function(eager, inputs, **kwargs)))
    assert _same(got, want)


def test_attention_maps_of_a_sandboxed_transformer_equal_eager(
        tmp_path: Path, pool: SandboxPool) -> None:
    attention = pytest.importorskip("estimators.attention")
    model = sdpa_transformer()
    sm = pool.get(export_pt2(model, tmp_path / "sdpa.pt2"), model.spec)
    inputs = model.spec.example_inputs(2, seed=1)
    got = sm.estimator("estimators.attention.capture_attention", inputs=inputs)
    want = attention.capture_attention(model, inputs)
    assert len(got) == len(want) == 2
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


# -- refusals and failures --------------------------------------------------------------------

def test_ops_and_estimators_outside_the_allowlist_are_refused(sandboxed: SandboxedModel,
                                                               eager: MultimodalModel) -> None:
    with pytest.raises(SandboxInputError, match="unknown op 'eval'") as err:
        sandboxed.call("eval", source="__import__('os').system('id')")
    assert err.value.kind == "op"
    with pytest.raises(SandboxInputError, match="is not allowed"):
        sandboxed.estimator("os.system", command="id")
    assert torch.equal(sandboxed.logits(eager.spec.example_inputs(1)),
                       eager(eager.spec.example_inputs(1)))  # the host is still serving


def test_wrong_inputs_are_a_client_error_naming_the_modality(sandboxed: SandboxedModel,
                                                             eager: MultimodalModel) -> None:
    inputs = eager.spec.example_inputs(2)
    inputs["image"] = torch.zeros(2, 1, 7, 7)
    with pytest.raises(SandboxInputError, match="image: dimension 2 must be 8") as err:
        sandboxed.logits(inputs)
    assert err.value.kind == "input"


def test_killed_host_is_restarted_transparently(sandboxed: SandboxedModel,
                                                eager: MultimodalModel) -> None:
    inputs = eager.spec.example_inputs(2, seed=6)
    sandboxed.logits(inputs)
    old_pid = sandboxed.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    assert torch.equal(sandboxed.logits(inputs), eager(inputs))
    assert sandboxed.pid not in (None, old_pid)


def test_call_over_its_timeout_stops_the_host_with_a_clean_error(
        pool: SandboxPool, sandboxed: SandboxedModel, eager: MultimodalModel) -> None:
    sandboxed.logits(eager.spec.example_inputs(1))  # warm
    with pytest.raises(SandboxError, match="did not answer 'logits' within") as err:
        sandboxed.call("logits", inputs=eager.spec.example_inputs(64), timeout_s=1e-4)
    assert err.value.kind == "timeout"
    assert sandboxed.pid is None


def test_program_with_fixed_batch_is_refused_with_export_advice_before_any_host_starts(
        tmp_path: Path) -> None:
    model = additive()
    path = export_pt2(model, tmp_path / "static.pt2", dynamic_batch=False)
    pool = SandboxPool(Settings(data_dir=tmp_path / "data"), FAST)
    advice = r"fixed batch size of 2.*torch.export.Dim\('batch'\)"
    with pytest.raises(SandboxError, match=advice) as err:
        pool.get(path, model.spec)
    assert err.value.kind == "load" and pool.running() == 0
    pool.shutdown()
    # the host checks the loaded program too (here in-process, on this honest file)
    with open(path, "rb") as f, pytest.raises(ProgramError, match=advice):
        LoadedProgram.load(f, model.spec.model_dump_json())


def test_files_that_are_not_keyword_export_programs_are_refused(tmp_path: Path) -> None:
    model = additive()
    pickled = tmp_path / "model.pt"
    torch.save(model.module, pickled)
    with pytest.raises(SandboxError, match=r"not a torch\.export program"):
        inspect_pt2(pickled, model.spec)
    (tmp_path / "junk.pt2").write_bytes(b"\x80\x04junk")
    with pytest.raises(SandboxError, match=r"not a torch\.export \.pt2 archive"):
        inspect_pt2(tmp_path / "junk.pt2", model.spec)
    inputs = model.spec.example_inputs(2)
    positional = torch.export.export(model.module, (inputs["a"], inputs["b"]))
    torch.export.save(positional, tmp_path / "positional.pt2")
    with pytest.raises(SandboxError, match=r"keyword tensors \['a', 'b'\].*2 positional"):
        inspect_pt2(tmp_path / "positional.pt2", model.spec)


class _Hungry(nn.Module):
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        big = a.new_ones(a.shape[0], 1 << 29)  # 2 GiB of float32 per row
        return torch.stack([big.sum(-1) + a.sum(-1), b.sum(-1)], dim=-1)


def test_memory_limit_hit_is_a_clean_error_and_the_host_survives(tmp_path: Path,
                                                                 pool: SandboxPool) -> None:
    spec = ModelSpec(modalities=[ModalitySpec(name="a", kind="tabular", shape=(3,)),
                                 ModalitySpec(name="b", kind="tabular", shape=(3,))],
                     classes=["x", "y"])
    path = export_pt2(MultimodalModel(_Hungry(), spec), tmp_path / "hungry.pt2")
    sm = pool.get(path, spec, limits=replace(FAST, memory_mb=1536))
    assert sm.sandbox["limits"]["RLIMIT_AS"] == 1536 << 20
    with pytest.raises(SandboxError, match="memory") as err:
        sm.logits(spec.example_inputs(1))
    assert err.value.kind == "limit"
    assert sm.pid is not None


# -- lifecycle --------------------------------------------------------------------------------

def test_idle_host_is_stopped_and_started_again_on_use(pool: SandboxPool, cnn_program: Path,
                                                       eager: MultimodalModel) -> None:
    sm = pool.get(cnn_program, eager.spec, limits=replace(FAST, idle_timeout_s=0.5))
    workdir = sm.workdir
    assert sm.pid is not None and workdir is not None and workdir.is_dir()
    deadline = time.monotonic() + 10
    while (sm.pid is not None or workdir.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sm.pid is None
    assert not workdir.exists()  # its temp dir went with it
    inputs = eager.spec.example_inputs(2)
    assert torch.equal(sm.logits(inputs), eager(inputs))
    assert sm.pid is not None


def _running(pid: int) -> bool:
    """True unless the process is gone or a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- the hostile program ----------------------------------------------------------------------

def test_hostile_pt2_runs_only_inside_the_confined_host(tmp_path: Path,
                                                        pool: SandboxPool) -> None:
    model = additive()
    canary = tmp_path / "canary.json"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        path = hostile_pt2(model, tmp_path / "hostile.pt2", canary,
                           probe_port=listener.getsockname()[1])
        sm = pool.get(path, model.spec)  # the payload runs now, in the host
    report = sm.sandbox
    # the program still loads and works: loading cannot tell a hostile file from a good one
    inputs = model.spec.example_inputs(2)
    assert torch.equal(sm.logits(inputs), model(inputs))
    assert sm.workdir is not None
    written = json.loads((sm.workdir / canary.name).read_text())
    assert not canary.exists()  # neither this process nor the host wrote outside the sandbox
    assert written["pid"] == sm.pid != os.getpid()
    assert written["cwd"] == str(sm.workdir)
    assert os.environ["CROSSLENS_ADMIN_TOKEN"]  # this process has secrets; the host has none
    for env in (written["env"], report["env"]):
        assert not [k for k in env if k.startswith("CROSSLENS") or "TOKEN" in k]
    if report["landlock_abi"]:
        assert "Permission denied" in written["escape_error"]
    if report["namespaces"] or report["landlock_abi"] >= 4:
        assert written["network"].startswith("blocked")
        assert report["network"].startswith("blocked")
    assert report["limits"]["RLIMIT_NOFILE"] == FAST.open_files
    assert report["limits"]["RLIMIT_AS"] == FAST.memory_mb << 20


FORGE_OVERSIZED_REPLY = """
import fcntl, os, struct
for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    try:
        is_pipe = os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
        writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
    except OSError:
        continue
    if is_pipe and writable:  # the reply pipe: claim a 1 TiB frame is coming
        os.write(fd, struct.pack(">4sIQ", b"CLX1", 2, 1 << 40) + b"{}")
"""


def test_forged_oversized_reply_is_refused_without_reading_it(tmp_path: Path,
                                                               pool: SandboxPool) -> None:
    model = additive()
    path = hostile_pt2(model, tmp_path / "forger.pt2", tmp_path / "canary.json",
                       extra_code=FORGE_OVERSIZED_REPLY)
    with pytest.raises(SandboxError, match=r"exceeds the limit.*it was stopped") as err:
        pool.get(path, model.spec)
    assert err.value.kind == "protocol"
    # the forger's host is gone (counted per program: other hosts may idle out meanwhile)
    assert pool.running(path) == 0


def test_shutdown_stops_every_host_and_the_pool_starts_again_on_use(
        pool: SandboxPool, sandboxed: SandboxedModel, eager: MultimodalModel) -> None:
    inputs = eager.spec.example_inputs(2)
    sandboxed.logits(inputs)
    pid = sandboxed.pid
    assert pool.running() >= 1 and pid is not None
    pool.shutdown()
    assert pool.running() == 0 and sandboxed.pid is None and not _running(pid)
    assert torch.equal(sandboxed.logits(inputs), eager(inputs))  # e.g. an app restarted
