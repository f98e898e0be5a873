"""Model versions and promotions over HTTP, on SQLite and PostgreSQL: the comparison
and refusal rules, the record and its audit entry in one transaction, and the
running server scoring with the new champion without a restart."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from serving.auth import Role
from serving.orm import AuditLog, ModelPromotion
from tests.conftest import train_on_shuffled_findings
from tests.serving.conftest import Api, Samples, api_on, payload, samples_of

API = "/api/v1"


@pytest.fixture(scope="session")
def world_two(web_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained world (champion 1) plus version 2 (challenger), trained on the same
    inspections with their findings shuffled among them: it learns nothing of what a
    finding looks like, so it is worse than the champion by construction. The world
    is one whose trafficking is frequent enough for the champion to learn it (on the
    default small world's few trafficking shipments the champion catches about as
    many as a draw would, and nothing can be shown worse than that)."""
    root = tmp_path_factory.mktemp("world-two") / "data"
    shutil.copytree(web_world, root)
    assert train_on_shuffled_findings(root) == "2"
    return root


@pytest.fixture(scope="session")
def world_two_samples(world_two: Path) -> Samples:
    return samples_of(world_two)


@pytest.fixture
def models_api(db_url: str, tmp_path: Path, world_two: Path) -> Iterator[Api]:
    with api_on(db_url, world_two, tmp_path) as api:
        yield api


def _promote(api: Api, version: str, body: dict[str, Any], role: Role = Role.data_scientist) -> Any:
    return api.client.post(f"{API}/models/{version}/promote", json=body, headers=api.headers(role))


def test_versions_listed_with_aliases_and_metrics(models_api: Api) -> None:
    api = models_api
    r = api.client.get(f"{API}/models", headers=api.headers(Role.auditor))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["champion"] == "1" and body["challenger"] == "2"
    # the metric promotions here compare: the synthetic world knows the truth
    assert body["primary_metric"] == "true recall at 5% capacity"
    assert [v["version"] for v in body["versions"]] == ["2", "1"]
    one = body["versions"][1]
    assert one["aliases"] == ["champion"] and one["promoted_by"] == "test"
    assert one["test_from"] and one["test_to"]
    assert 0 <= one["metrics"]["true_recall_at_5pct"] <= 1
    assert "pr_auc" in one["metrics"]
    # the shuffled-findings model is worse at training already: what the page shows the
    # person deciding
    two = body["versions"][0]
    assert two["metrics"]["true_recall_at_5pct"] < one["metrics"]["true_recall_at_5pct"]


def test_promotion_rules_record_audit_and_hot_swap(
    models_api: Api, world_two_samples: Samples
) -> None:
    api, samples = models_api, world_two_samples
    officer = api.headers(Role.officer)
    before = api.client.post(f"{API}/shipments", json=payload(samples, 1, "PM-1"), headers=officer)
    assert before.status_code == 201 and before.json()["model_version"] == "1"

    worse = _promote(api, "2", {})
    assert worse.status_code == 409 and "worse than champion 1" in worse.json()["detail"]
    no_reason = _promote(api, "2", {"force": True, "reason": "  "})
    assert no_reason.status_code == 422
    assert no_reason.json()["detail"][0]["loc"] == ["body", "reason"]
    assert _promote(api, "9", {"force": True, "reason": "x"}).status_code == 404
    assert _promote(api, "1", {}).status_code == 409  # already the champion
    assert _promote(api, "2", {"force": True, "reason": "x"}, Role.analyst).status_code == 403
    # a program (an API key) cannot decide a promotion: a person signs in
    key = api.client.post(
        f"{API}/users/api-keys",
        json={"name": "retrain-pipeline", "role": "data_scientist"},
        headers=api.headers(Role.admin),
    ).json()["key"]
    keyed = api.client.post(
        f"{API}/models/2/promote",
        json={"force": True, "reason": "nightly job"},
        headers={"X-API-Key": key},
    )
    assert keyed.status_code == 403 and "person must sign in" in keyed.json()["detail"]

    done = _promote(api, "2", {"force": True, "reason": "drill: roll back the model"})
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["serving_version"] == "2"
    promo = result["promotion"]
    assert promo["version"] == "2" and promo["previous"] == "1" and promo["forced"] is True
    assert promo["promoted_by"] == "data-scientist1" and promo["via"] == "api"
    assert promo["primary_challenger"] < promo["primary_champion"]
    assert result["champion"]["test_window"] == result["challenger"]["test_window"]

    # the running app scores with the new champion at once (no restart, no refresh wait)
    after = api.client.post(f"{API}/shipments", json=payload(samples, 2, "PM-2"), headers=officer)
    assert after.status_code == 201 and after.json()["model_version"] == "2"
    listed = api.client.get(f"{API}/models", headers=api.headers(Role.data_scientist)).json()
    assert listed["champion"] == "2"

    # recorded once, with its audit entry, in the same database
    history = api.client.get(f"{API}/models/promotions", headers=api.headers(Role.auditor))
    assert [(p["version"], p["reason"]) for p in history.json()] == [
        ("2", "drill: roll back the model")
    ]
    entries = api.client.get(
        f"{API}/audit", params={"kind": "promotion"}, headers=api.headers(Role.auditor)
    ).json()
    assert len(entries) == 1
    entry = entries[0]
    assert entry["seq"] == result["audit_seq"] and entry["actor"] == "data-scientist1"
    assert entry["payload"]["promotion_id"] == promo["id"]
    assert entry["payload"]["reason"] == "drill: roll back the model"
    assert entry["payload"]["previous"] == "1" and entry["payload"]["forced"] is True
    verify = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor)).json()
    assert verify["ok"] is True

    back = _promote(api, "1", {}, Role.admin)  # better again: no reason needed
    assert back.status_code == 200, back.text
    assert back.json()["promotion"]["reason"] == "better or equal on the primary metric"
    with api.app.state.session_factory() as session:
        rows = list(session.scalars(select(ModelPromotion).order_by(ModelPromotion.id)))
        assert [(r.model_version, r.promoted_by) for r in rows] == [
            ("2", "data-scientist1"),
            ("1", "admin1"),
        ]
        kinds = session.scalars(select(AuditLog.kind).where(AuditLog.kind == "promotion")).all()
        assert len(kinds) == 2
