"""Request and response models of the HTTP API (``/work/briefs/api_contract.md``).

Field names here are binding for the UI and the jobs worker; the OpenAPI schema at
``/api/v1/openapi.json`` is generated from these classes. Responses carry plain JSON numbers
(nested lists for arrays), already reduced for drawing: an image is one ``[H][W]`` map,
a token sequence one value per token, a time series ``[C][L]``, a table ``[F]``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from estimators.model import ModelSpec, TokenSegment

Role = Literal["viewer", "editor", "admin"]
Output = Literal["logits", "log_softmax", "softmax"]
ModelFormat = Literal["safetensors", "pt2"]
AttributionMethod = Literal["integrated_gradients", "saliency", "input_x_gradient"]
Baseline = Literal["zeros", "mean", "pad", "mask", "blur"]



def _as_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# Stored times are UTC; SQLite hands them back naive, so every output carries the zone.
UTCDatetime = Annotated[dt.datetime, AfterValidator(_as_utc)]

# Ids and row indices: 32-bit signed (Postgres INTEGER), so huge numbers are a clean 422.
MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=0, le=MAX_ID)]

# Nested lists of floats of any depth (image [H][W], timeseries [C][L], tabular [F]).
Values = list[Any]


# -- projects, members, notes --------------------------------------------------------------


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")
    description: str = Field(default="", max_length=500)


class ProjectOut(BaseModel):
    id: int
    name: str
    description: str
    role: Role = Field(description="the caller's role in the project (global admins: admin)")


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=64, description="user name")
    role: Role


class MemberOut(BaseModel):
    project_id: int
    user: str
    role: Role


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_id: Id
    model_id: Id | None = None
    dataset_id: Id
    index: Id
    text: str = Field(min_length=1, max_length=5000)


class NoteOut(BaseModel):
    id: int
    project_id: int
    model_id: int | None
    dataset_id: int
    index: int
    author: str
    text: str
    created_at: UTCDatetime


# -- models ---------------------------------------------------------------------------------


class ModelOut(BaseModel):
    id: int
    project_id: int
    name: str
    format: ModelFormat
    architecture: str | None = Field(description="registry name; null for .pt2 programs")
    spec: ModelSpec
    sha256: str
    size_bytes: int
    created_at: UTCDatetime
    accuracy: float | None = Field(default=None, description="on the demo dataset, when known")
    smooth: bool | None = Field(
        default=None, description="false for piecewise-linear (ReLU) models, whose Hessian "
        "interaction maps are zero almost everywhere; null when unknown (.pt2)")
    description: str = ""


class ValidationReport(BaseModel):
    ok: bool
    deterministic: bool | None = Field(
        description="two eval-mode forwards on the same batch agree; null when none ran")
    errors: list[str]
    warnings: list[str]


# -- datasets -------------------------------------------------------------------------------


class ModalityInfo(BaseModel):
    shape: list[int]
    dtype: str


class DatasetOut(BaseModel):
    id: int
    project_id: int
    name: str
    n: int
    modalities: dict[str, ModalityInfo]
    label_counts: dict[str, int]
    sha256: str
    size_bytes: int
    created_at: UTCDatetime
    description: str = ""


class InstanceRow(BaseModel):
    index: int
    id: str
    label: int
    predicted: int | None = None
    confidence: float | None = None
    correct: bool | None = None


class InstancePage(BaseModel):
    total: int
    items: list[InstanceRow]


class ModalityView(BaseModel):
    """One modality of one instance, ready to draw. Extra keys per kind:
    image → ``channels`` (per-channel [C][H][W], display normalisation undone);
    text → ``tokens`` (pad dropped), ``ids``; timeseries → ``sample_rate_hz``, ``unit``;
    tabular → ``feature_names``, ``units``."""

    model_config = ConfigDict(extra="allow")

    kind: str
    shape: list[int]
    values: Values


class InstanceView(BaseModel):
    index: int
    id: str
    label: int
    label_name: str | None
    modalities: dict[str, ModalityView]


# -- instance explanations -----------------------------------------------------------------


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: Id
    dataset_id: Id
    index: Id
    target: int | None = Field(default=None, ge=0, le=MAX_ID,
                               description="class to explain; null = the predicted class")
    output: Output = "logits"


class PredictOut(BaseModel):
    classes: list[str]
    probs: list[float]
    predicted: int
    label: int
    logits: list[float]


class AttributionRequest(ExplainRequest):
    method: AttributionMethod = "integrated_gradients"
    baseline: Baseline = "zeros"


class ModalityAttribution(BaseModel):
    kind: str
    values: Values = Field(description="signed, reduced like InstanceView's values")
    total: float = Field(description="sum of the signed attributions of this modality")
    abs_total: float = Field(description="sum of absolute attributions of this modality")


class AttributionOut(BaseModel):
    method: AttributionMethod
    target: int
    delta: float | None = Field(description="integrated gradients' completeness error")
    modalities: dict[str, ModalityAttribution]


class InteractionRequest(ExplainRequest):
    a: str = Field(min_length=1, max_length=64, description="first modality name")
    b: str = Field(min_length=1, max_length=64, description="second modality name")
    top_k: int = Field(default=10, ge=1, le=100)
    weight: Literal["input", "ones"] = Field(
        default="input", description="input: M[p,q] = Σ x_i H_ij x_j over element pairs (the "
        "cross term of the second-order Taylor expansion, in output units); ones: Σ H_ij")


class TopPair(BaseModel):
    i: int
    j: int
    value: float
    a_label: str
    b_label: str


class InteractionOut(BaseModel):
    a: str
    b: str
    target: int
    weight: str
    a_labels: list[str]
    b_labels: list[str]
    matrix: list[list[float]] = Field(description="len(a_labels) × len(b_labels)")
    top_pairs: list[TopPair]
    all_zero: bool
    note: str | None


class AttentionRequest(ExplainRequest):
    layer: int | None = Field(default=None, ge=0, le=MAX_ID)
    head: int | None = Field(default=None, ge=0, le=MAX_ID)
    query: int | None = Field(default=None, ge=0, le=MAX_ID)


class AttentionOut(BaseModel):
    available: bool
    note: str | None
    n_layers: int
    n_heads: int
    labels: list[str] = Field(description="one per sequence position")
    segments: list[TokenSegment] | None
    summary: list[list[dict[str, float | None]]] = Field(
        description="layer × head: to_<modality>, within, cross, to_cls, entropy, ...")
    map: list[list[float]] | None = Field(description="N×N of the chosen layer/head "
                                          "(mean over heads when head is null)")
    rollout: list[list[float]] | None
    query_grid: list[list[float]] | None = Field(
        description="the chosen query's attention over the image patch grid")
    cross_modal_share: list[float | None] | None = None
    layer: int | None = None
    head: int | None = None
    query: int | None = None
    grid_segment: dict[str, Any] | None = None


class WhatIfRequest(ExplainRequest):
    drop: list[str] = Field(min_length=1, max_length=16, description="modalities to replace")
    replace: Literal["baseline", "mean"] = "baseline"


class WhatIfOut(BaseModel):
    classes: list[str]
    before: list[float]
    after: list[float]
    predicted_before: int
    predicted_after: int
