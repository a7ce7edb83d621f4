"""The pure parts of the pages: URL state, upload decoding, where API errors are shown."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

from app.api_client import ApiError
from app.components import human_bytes
from app.components.forms import decode_upload, field_errors
from app.components.urlstate import PREDICTED, as_int, as_pair, explain_request, pick, query_string

MODEL_FIELDS = {"name": "name", "weights": "main", "config": "meta", "architecture": "meta"}


def test_query_string_round_trips_the_view_state() -> None:
    query = query_string({"project": 1, "model": 4, "instance": 0, "pair": [27, 3],
                          "layer": None, "target": "", "method": "saliency"})
    parsed = {k: v[0] for k, v in parse_qs(query[1:]).items()}
    assert parsed == {"project": "1", "model": "4", "instance": "0", "pair": "27-3",
                      "method": "saliency"}  # instance 0 kept; None and "" dropped
    assert as_pair(parsed["pair"]) == [27, 3]
    assert as_int(parsed["instance"]) == 0
    assert query_string({"layer": None}) == ""


def test_bad_query_values_fall_back_instead_of_failing() -> None:
    assert as_int("seven", 3) == 3 and as_int(None) is None
    assert as_pair("1-x") is None and as_pair("1-2-3") is None and as_pair(None) is None
    assert pick("bogus", ["logits", "softmax"]) == "logits"
    assert pick(5, [1, 2], default=2) == 2
    assert pick(None, []) is None


def test_explain_request_uses_null_target_for_the_predicted_class() -> None:
    state = {"model": 2, "dataset": 3, "instance": 7, "target": PREDICTED, "output": None}
    assert explain_request(state) == {"model_id": 2, "dataset_id": 3, "index": 7,
                                      "output": "logits", "target": None}
    assert explain_request({**state, "target": "1"})["target"] == 1


def test_upload_data_urls_decode_and_garbage_is_refused() -> None:
    payload = b"\x00\x01safetensors"
    url = "data:application/octet-stream;base64," + base64.b64encode(payload).decode()
    assert decode_upload(url) == payload
    assert decode_upload("data:x;base64,@@@") is None
    assert decode_upload(None) is None and decode_upload("no comma") is None


def test_api_messages_land_next_to_the_field_they_name() -> None:
    not_json = ApiError(422, "config is not valid JSON: Expecting property name")
    assert field_errors(not_json, MODEL_FIELDS) == {
        "meta": "config is not valid JSON: Expecting property name (HTTP 422)"}
    misfit = ApiError(422, "weights part-3 do not fit architecture 'transformer'; check the "
                           "config's params")
    assert list(field_errors(misfit, MODEL_FIELDS)) == ["main"]  # the first field it names
    unknown = ApiError(422, "unknown architecture 'x'")
    assert list(field_errors(unknown, MODEL_FIELDS)) == ["meta"]
    vague = ApiError(409, "something else went wrong")
    assert list(field_errors(vague, MODEL_FIELDS)) == ["form"]


def test_fastapi_validation_errors_use_their_location() -> None:
    error = ApiError(422, [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"},
                           {"loc": ["body", "weights"], "msg": "Field required"}])
    placed = field_errors(error, MODEL_FIELDS)
    assert placed == {"name": "name: Field required (HTTP 422)",
                      "main": "weights: Field required (HTTP 422)"}


def test_too_large_uploads_blame_the_file_and_unreachable_api_the_form() -> None:
    assert list(field_errors(ApiError(413, "upload exceeds 200 MB"), MODEL_FIELDS)) == ["main"]
    offline = field_errors(ApiError(None, "ConnectError"), MODEL_FIELDS)
    assert offline == {"form": "The crosslens API cannot be reached (ConnectError). "
                               "Is it running?"}


def test_sizes_read_like_people_write_them() -> None:
    assert [human_bytes(n) for n in (None, 512, 2048, 5 * 1024 ** 2)] == [
        "—", "512 B", "2.0 KB", "5.0 MB"]
