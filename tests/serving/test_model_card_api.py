"""UAT round 2, DS F18: a version's model card in the service, over HTTP on SQLite and
PostgreSQL.

`GET /api/v1/models/{version}/card` gives the card `caravan train` wrote (data
windows, inputs, features left out, attributes never used, known limits, data hash,
code version, metrics) and the roles that may read it, to the roles that read
models (data scientist, auditor, admin); /web/models links every version's card,
rendered at /web/models/{version}/card with every value escaped (feature names and
descriptions may come from an export). A version without a card answers 404 saying
so; the copy logged with the MLflow run serves when reports/ lost it."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from data_contracts.settings import DataLayout
from serving.auth import Role
from tests.serving.conftest import Api, password_for, username_for
from tests.serving.test_uat_users import _web_login

API = "/api/v1"
SCRIPT = '<script>alert("card")</script>'


def _layout(api: Api) -> DataLayout:
    return DataLayout(Path(api.app.state.layout.root))


def _disk_card(api: Api, version: str = "1") -> Path:
    return _layout(api).reports / "evaluation" / f"v{version}" / "model_card.json"


def _run_card(api: Api, version: str = "1") -> Path:
    """The card logged with the version's MLflow run (its artifact on disk)."""
    from models.assess import registry

    layout = _layout(api)
    run_id = registry(layout).version(version).run_id
    (path,) = [
        p for p in layout.mlflow_artifacts.rglob("evaluation/model_card.json") if run_id in p.parts
    ]
    return path


def _web(api: Api, role: Role) -> TestClient:
    client = TestClient(api.app, follow_redirects=False)
    _web_login(client, username_for(role), password_for(role))
    return client


def test_the_card_of_a_version_over_the_api(world_api: Api) -> None:
    from models.assess import registry

    api = world_api
    r = api.client.get(f"{API}/models/1/card", headers=api.headers(Role.auditor))
    assert r.status_code == 200, r.text
    card = r.json()
    stored = json.loads(_disk_card(api).read_text())
    tags = registry(_layout(api)).version("1").tags
    assert card["version"] == "1" and card["model"] == "caravan-risk"
    assert set(card["data_windows"]) == {"train", "valid", "test"}
    assert card["data_windows"] == stored["data_windows"]
    assert card["rows"] == stored["rows"] and card["rows"]["train"] > 0
    # the findings per window reach the API and the page (review of stop 24)
    assert card["positives"] == stored["positives"] and card["positives"]["train"] > 0
    page = _web(api, Role.auditor).get("/web/models/1/card")
    windows = page.text[page.text.index('id="card-windows"') :].split("</table>")[0]
    assert f"<td>{stored['positives']['test']}</td>" in windows
    assert card["data_hash"] == tags["data_hash"] and card["code_version"] == tags["code_version"]
    assert card["feature_set_version"] == tags["feature_set_version"]
    assert [f["name"] for f in card["features"]] == [f["name"] for f in stored["features"]]
    assert card["features_left_out"] == stored["features_left_out"]
    assert any("nationality" in a for a in card["excluded_attributes"])
    assert card["known_limits"] == stored["known_limits"]
    assert card["metrics"]["at_capacity"]["5%"]["recall"] is not None
    assert card["early_stopping"]["metric"] == "average_precision"
    assert card["readers"] == ["admin", "auditor", "data_scientist"]
    for role in (Role.data_scientist, Role.admin):
        assert api.client.get(f"{API}/models/1/card", headers=api.headers(role)).status_code == 200
    for role in (Role.officer, Role.analyst):
        assert api.client.get(f"{API}/models/1/card", headers=api.headers(role)).status_code == 403
    assert api.client.get(f"{API}/models/1/card").status_code == 401

    missing = api.client.get(f"{API}/models/9/card", headers=api.headers(Role.auditor))
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no model version 9"
    bad = api.client.get(f"{API}/models/x1/card", headers=api.headers(Role.auditor))
    assert bad.status_code == 422


def test_the_mlflow_copy_serves_and_a_version_without_card_answers_404(world_api: Api) -> None:
    api = world_api
    auditor = api.headers(Role.auditor)
    disk = _disk_card(api)
    original = json.loads(disk.read_text())
    # a card in the folder that is not this version's is not served as its card
    disk.write_text(json.dumps({**original, "version": "7", "purpose": "someone else's"}))
    r = api.client.get(f"{API}/models/1/card", headers=auditor)
    assert r.status_code == 200 and r.json()["purpose"] == original["purpose"]
    # reports/ lost it: the copy logged with the MLflow run
    disk.unlink()
    r = api.client.get(f"{API}/models/1/card", headers=auditor)
    assert r.status_code == 200 and r.json()["data_hash"] == original["data_hash"]
    # neither: 404 saying why, on the page too
    _run_card(api).unlink()
    r = api.client.get(f"{API}/models/1/card", headers=auditor)
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert detail.startswith("model version 1 has no model card")
    assert "reports/evaluation/v1/model_card.json" in detail and "retrain" in detail
    page = _web(api, Role.auditor).get("/web/models/1/card")
    assert page.status_code == 404 and "Version 1 has no model card" in page.text


def test_the_models_page_links_each_card_rendered_escaped(world_api: Api) -> None:
    api = world_api
    disk = _disk_card(api)
    card = json.loads(disk.read_text())
    # text from an export's own column, e.g. a hostile column name or description
    card["features"].append(
        {"name": f"extra_{SCRIPT}", "family": "extra", "description": f"kept {SCRIPT}"}
    )
    card["known_limits"].append(f"limit {SCRIPT}")
    disk.write_text(json.dumps(card))

    r = api.client.get(f"{API}/models/1/card", headers=api.headers(Role.auditor))
    assert r.status_code == 200
    assert r.json()["features"][-1]["name"] == f"extra_{SCRIPT}"  # data, as it is

    auditor = _web(api, Role.auditor)
    models = auditor.get("/web/models")
    assert models.status_code == 200
    assert 'href="/web/models/1/card"' in models.text
    # the evaluation's notes under the champion's figures (UAT2 DS F17), escaped
    evaluation_path = disk.parent / "evaluation.json"
    evaluation = json.loads(evaluation_path.read_text())
    evaluation["notes"] = ["no inspection of the test window found anything <b>x</b>"]
    evaluation_path.write_text(json.dumps(evaluation))
    models = auditor.get("/web/models")
    assert "no inspection of the test window found anything &lt;b&gt;x&lt;/b&gt;" in models.text
    page = auditor.get("/web/models/1/card")
    assert page.status_code == 200, page.text
    text = page.text
    assert "Model card: version 1" in text
    for heading in (
        "Data windows",
        "Model inputs",
        "Attributes never used",
        "Known limits",
        "Metrics on the test window",
    ):
        assert heading in text, heading
    assert card["data_hash"] in text and card["code_version"] in text
    assert card["data_windows"]["train"][0] in text
    assert "Roles that may read models and their cards:" in text
    assert "&lt;script&gt;alert(&#34;card&#34;)&lt;/script&gt;" in text
    assert SCRIPT not in text
    # Russian, and a role that may not read models
    russian = auditor.get("/web/models/1/card", headers={"Accept-Language": "ru-RU,ru"})
    assert "Карточка модели: версия 1" in russian.text
    assert "Признаки, которые никогда не используются" in russian.text
    officer = _web(api, Role.officer)
    assert officer.get("/web/models/1/card").status_code == 403
    assert auditor.get("/web/models/9/card").status_code == 404
    assert auditor.get("/web/models/01/card").status_code == 404
