"""`POST /shipments` validates its body once: FastAPI validates it against
`shipment_in_model()` and `prepare_validated_shipment` takes that model as it is,
where `prepare_shipment` dumped it to JSON and validated it again. Both give the same
`Prepared` (record, goods lines, content hash, order received), to the types and
time zones of the values, for the world's shipments and for bodies that JSON
round trips could change (integers for decimals, offsets other than UTC, extras,
lines out of order, lines without their shipment id); over the API, a shipment
sent alone and then again in a batch is the same content."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydantic import TypeAdapter

from serving.auth import Role
from serving.schemas import shipment_in_model
from serving.services import prepare_shipment, prepare_validated_shipment
from serving.services.shipments import Prepared
from tests.serving.conftest import Api, Samples, payload

API = "/api/v1"
LATER = dt.date(2026, 3, 3)  # (after the world, before now)


def _as_fastapi_validates(raw: dict[str, Any]) -> Any:
    """The body as FastAPI hands it to the endpoint: the JSON text parsed, then
    validated in Python mode against the route's model."""
    adapter = TypeAdapter(shipment_in_model())
    return adapter.validate_python(json.loads(json.dumps(raw)), from_attributes=True)


def _same(a: Prepared, b: Prepared) -> None:
    assert a == b
    # (equal is not enough: the same types and the same time zones, as repr shows them)
    assert repr(a) == repr(b)


def _variants(samples: Samples) -> list[dict[str, Any]]:
    out = [payload(samples, i, f"ONCE-{i}", day=LATER) for i in range(len(samples[0]))]
    odd = payload(samples, 0, "ONCE-ODD", day=LATER)
    for key in ("gross_mass_kg", "invoice_amount"):
        if isinstance(odd.get(key), float):
            odd[key] = int(odd[key]) + 1  # (an integer where a decimal is expected)
    odd["declared_at"] = "2026-03-03T14:05:09.123456+06:00"
    odd["expected_arrival_at"] = "2026-03-03T20:05:09-03:30"
    odd["extras"] = {"score_a": 5, "score_b": 2.5, "channel": "post", "gone": None}
    odd["items"] = list(reversed(odd["items"]))
    for line in odd["items"]:
        line.pop("shipment_id", None)
        if isinstance(line.get("value"), float):
            line["value"] = int(line["value"]) + 1
    out.append(odd)
    zulu = payload(samples, 1, "ONCE-Z", day=LATER)
    zulu["declared_at"] = "2026-03-03T08:00:00Z"
    out.append(zulu)
    return out


def test_the_validated_body_gives_what_validating_it_again_gives(samples: Samples) -> None:
    checked = 0
    for raw in _variants(samples):
        body = _as_fastapi_validates(raw)
        _same(prepare_validated_shipment(body), prepare_shipment(body.model_dump(mode="json")))
        # and what a batch row of the same record gives
        _same(prepare_validated_shipment(body), prepare_shipment(raw))
        checked += 1
    assert checked > 50


def test_only_the_shipment_model_is_taken(samples: Samples) -> None:
    from serving.schemas import traveller_in_model

    with pytest.raises(TypeError):
        prepare_validated_shipment(traveller_in_model().model_construct())
    with pytest.raises(TypeError):
        prepare_validated_shipment(shipment_in_model().model_validate)  # type: ignore[arg-type]


def test_a_shipment_sent_alone_then_in_a_batch_is_the_same_content(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    analyst = api.headers(Role.analyst)
    ship = payload(samples, 3, "ONCE-API", day=LATER)
    ship["items"] = list(reversed(ship["items"]))  # (received out of order)
    first = api.client.post(f"{API}/shipments", json=ship, headers=analyst)
    assert first.status_code == 201, first.text
    assert first.json()["content_hash"] == prepare_shipment(ship).content_hash
    again = api.client.post(f"{API}/shipments/batch", json={"records": [ship]}, headers=analyst)
    assert again.status_code == 200, again.text
    answer = again.json()
    assert answer["errors"] == [] and answer["stored"] == []
    assert [u["content_hash"] for u in answer["unchanged"]] == [first.json()["content_hash"]]
    alone = api.client.post(f"{API}/shipments", json=ship, headers=analyst)
    assert alone.status_code == 200, alone.text
    assert alone.json() == first.json()
