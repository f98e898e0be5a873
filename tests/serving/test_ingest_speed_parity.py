"""Single-shipment ingest over HTTP (the API's fast paths: the parties' keys and
the linked travellers' screening in Python, the feature vector read from the rows
at once, the feature-set version kept per model) stores what the frame path of
`serving.scoring.score_shipments` computes for the same shipment against the same
history: probability, priority, lane, feature vector, watchlist hit (a linked
traveller listed by name, another by document), rule hits, versions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import numpy as np
import polars as pl
import pytest

from features import travellers
from features.build import CONTEXT, build_features
from features.state import FeatureState
from models import explain
from models.dataset import matrix
from models.explain import TreeParts, explain_frame
from serving import scoring
from serving.auth import Role
from serving.policy import LaneThresholds
from serving.rules_engine import load_rules_yaml
from serving.services import load_shipment
from serving.services.rules import active_rules
from tests.factories import traveller
from tests.serving.conftest import Api, Samples, payload
from tests.serving.test_watchlists_api import _national, _upload

API = "/api/v1"
COMPANY = "Silk Way Trading LLP"
LATER = dt.date(2026, 3, 3)


def _records(ships: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Traveller records linked to parties of the shipments: one by the phone of a
    company consignee, one by the name and phone of a declarant."""
    return [
        traveller(
            traveller_record_id="PAR-T1",
            surname="ZHORABEKOV",
            given_names="TIMUR",
            name_native="Жорабеков Тимур",
            document_number="PX7654321",
            contact_phone=ships[1]["consignee_phone"],
            contact_email=None,
            contact_address=None,
        ),
        traveller(
            traveller_record_id="PAR-T2",
            surname="KARIMOVA",
            given_names="DILNOZA",
            name_native="Каримова Дилноза",
            document_number="PX1112223",
            contact_phone=ships[4]["declarant_phone"],
            contact_email=None,
            contact_address=None,
        ),
    ]


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_single_ingest_stores_what_the_frame_path_computes(
    world_api: Api, samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = world_api
    analyst = api.headers(Role.analyst)
    # (after the world's last declaration: in order, as the feature state takes them)
    ships = [payload(samples, i, f"PAR-{i}", day=LATER) for i in range(7)]
    ships[1]["consignee_name"] = COMPANY  # (a company: its phone links strongly)
    ships[4]["declarant_name"] = "Karimova Dilnoza"
    for record in _records(ships):
        r = api.client.post(f"{API}/travellers", json=_jsonable(record), headers=analyst)
        assert r.status_code == 201, r.text
    listed = _upload(
        api,
        "national",
        _national(
            "PAR-1,individual,Timur Zhorabekov,,,,,,,",
            "PAR-2,individual,Other Person,,,,,PX1112223,,",
        ),
        "text/csv",
        list_name="PAR-national",
    )
    assert listed.status_code == 200, listed.text
    answers = {}
    for ship in ships:
        r = api.client.post(f"{API}/shipments", json=ship, headers=analyst)
        assert r.status_code == 201, r.text
        answers[ship["shipment_id"]] = r.json()
    # The linked travellers acted: one by name, one by document.
    matches = {sid: a["watchlist"]["match"] for sid, a in answers.items()}
    assert matches["PAR-1"]["traveller_record_id"] == "PAR-T1"
    assert matches["PAR-1"]["by"] == "name"
    assert matches["PAR-4"]["traveller_record_id"] == "PAR-T2"
    assert matches["PAR-4"]["by"] == "document"

    # The frame path, shipment by shipment, against the history as it is now (each
    # shipment's features are point in time; its operational screening, as the
    # API's, over its own parties).
    services = api.app.state.services
    history = services.history.snapshot()
    state = FeatureState.build(history)
    with api.app.state.session_factory() as session:
        rules = active_rules(session, services)
        stored = {sid: load_shipment(session, sid) for sid in answers}
    handle = services.holder.handle
    monkeypatch.setattr(travellers, "SMALL_KEYS", -1)
    monkeypatch.setattr(scoring, "SMALL_MATRIX", -1)
    for sid, answer in answers.items():
        one = history.shipments.filter(pl.col("shipment_id") == sid)
        lines = history.items.filter(pl.col("shipment_id") == sid)
        (want,) = scoring.score_shipments(one, lines, state, handle, rules)
        got = stored[sid]
        assert got is not None
        assert _close(answer["probability"], want.probability), sid
        assert _close(answer["priority"], want.priority), sid
        assert answer["lane"] == want.lane and answer["must_inspect"] == want.must_inspect
        assert answer["feature_set_version"] == want.feature_set_version
        assert answer["model_version"] == want.model_version
        assert answer["watchlist"] == {
            "best_score": want.watchlist_score,
            "exact": want.watchlist_exact,
            "match": want.watchlist_match,
        }
        assert [(h["rule_id"], h["rule_version"]) for h in answer["rule_hits"]] == sorted(
            (h.rule_id, h.rule_version) for h in want.rule_hits
        )
        vector = got.score.feature_vector
        assert vector.keys() == want.features.keys()
        assert all(_close(vector[k], want.features[k]) for k in vector), sid
        context = (got.score.explanation or {})["context"]
        assert context == _jsonable(want.context)


def _jsonable(value: Any) -> Any:
    from serving.services import jsonable

    return jsonable(value)


def test_feature_set_version_follows_the_model_handle() -> None:
    """The version kept per model handle is the one computed for it: a handle with
    other extras (another model) gets its own."""
    plain = scoring.ModelHandle(None, "1", ("a",), dt.datetime.now(dt.UTC))  # type: ignore[arg-type]
    extras = {"numeric": ["extra_weight"], "categorical": {"extra_port": ["A", "B"]}}
    other = scoring.ModelHandle(None, "2", ("a",), dt.datetime.now(dt.UTC), extras)  # type: ignore[arg-type]
    for _ in range(3):
        assert scoring._feature_set_version(plain) == scoring.feature_set_version(plain.extras)
        assert scoring._feature_set_version(other) == scoring.feature_set_version(extras)
    assert scoring._feature_set_version(plain) != scoring._feature_set_version(other)


def test_explanations_in_parts_equal_the_whole_models(
    world_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`score_shipments` explains the shipments of the red and yellow lanes (by the
    model or by a rule) with contributions computed over the model's trees in parts
    (`models.explain.TreeParts`) and reasons ranked from the contexts it read: the
    same reasons as `explain_frame` with the whole model, for one shipment and
    several; green ones are not explained."""
    services = world_api.app.state.services
    history = services.history.snapshot()
    state = FeatureState.build(history)
    whole = services.holder.handle
    monkeypatch.setattr(explain, "PARALLEL_MIN_TREES", 2)
    parted = dataclasses.replace(whole, parts=TreeParts(whole.booster, parts=2))
    assert parted.parts is not None and len(parted.parts.parts) == 2
    ships = history.shipments.sort("declared_at").tail(8)
    lines = history.items.join(ships.select("shipment_id"), on="shipment_id", how="semi")
    feats = build_features(ships, lines, state)
    names = list(whole.names)
    x = matrix(feats, names)
    prob = whole.predict_vectors(feats.select(names).to_dicts())
    # A yellow threshold between the probabilities: the model alone flags some; a
    # must-inspect rule sends the least likely shipment to the red lane too.
    order = np.argsort(prob)
    thresholds = LaneThresholds(red=0.999, yellow=float(prob[order[len(order) // 2]]))
    ruled = str(feats["shipment_id"][int(order[0])])
    rules = load_rules_yaml(
        "rules:\n  - id: pick-one\n    name: One shipment\n    severity: must_inspect\n"
        '    effective_from: "2000-01-01"\n'
        f"    condition: {{field: shipment_id, op: eq, value: {ruled}}}\n"
    )
    expected = {
        str(r["shipment_id"]): r["reasons"]
        for r in explain_frame(whole.booster, feats, x, names, list(CONTEXT))
    }
    calls = 0  # (one computation of contributions per group with a flagged shipment)
    for group in [ships, *(ships[i : i + 1] for i in range(ships.height))]:
        mine = lines.join(group.select("shipment_id"), on="shipment_id", how="semi")
        got = scoring.score_shipments(group, mine, state, parted, rules, thresholds=thresholds)
        flagged = {s.shipment_id for s in got if s.lane != "green"}
        calls += bool(flagged)
        if group.height > 1:
            assert ruled in flagged and 1 < len(flagged) < group.height
        for s in got:
            if s.shipment_id not in flagged:
                assert s.explanation is None
                continue
            assert s.explanation is not None
            want = expected[s.shipment_id]
            assert [r["feature"] for r in s.explanation] == [r["feature"] for r in want]
            assert [r["text_en"] for r in s.explanation] == [r["text_en"] for r in want]
            for a, b in zip(s.explanation, want, strict=True):
                assert math.isclose(a["log_odds"], b["log_odds"], abs_tol=1e-9)
                assert math.isclose(a["probability_effect"], b["probability_effect"], abs_tol=1e-9)
    assert parted.parts.calls_in_parts == calls > 1
    assert explain._splitting == 0
