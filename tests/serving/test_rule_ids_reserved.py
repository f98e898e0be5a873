"""Rule ids that are words of the rules' own addresses (UAT stop 13).

`/web/rules/new`, `/web/rules/apply` and `/web/rules/test` come before
`/web/rules/{rule_id}`, so a rule of such an id could not be opened on the web (and
its form would be sent to the action). No new rule takes a reserved id, whether saved
over the API, imported from YAML or saved on the page: 422 naming `id` and why. A rule
stored under one before keeps its id and works over the API as before: its own
routes there (`PUT /api/v1/rules/apply`, `/apply/versions` ...) are not shadowed by the
fixed ones, which answer other methods."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from serving.auth import Role
from serving.services import rules as rules_service
from serving.services.rules import RESERVED_RULE_IDS
from serving.web.pages import router as web_router
from tests.serving.conftest import Api, password_for, username_for
from tests.serving.test_uat_users import CSRF, _web_login

API = "/api/v1"
YAML = {"Content-Type": "application/yaml"}
CONDITION = {"field": "item.hs_code", "op": "starts_with", "value": "93"}


def _rule(rule_id: str, name: str = "Arms chapter") -> dict[str, Any]:
    return {"id": rule_id, "name": name, "severity": "low", "condition": CONDITION}


def _stored_ids(api: Api) -> set[str]:
    r = api.client.get(f"{API}/rules", headers=api.headers(Role.analyst))
    assert r.status_code == 200, r.text
    return {rule["id"] for rule in r.json()}


def test_every_fixed_word_of_the_rules_addresses_is_reserved(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    api_words = {m.group(1) for p in paths if (m := re.match(r"^/api/v1/rules/([^/{]+)", p))}
    web_words = {
        m.group(1)
        for route in web_router.routes
        if (m := re.match(r"^/rules/([^/{]+)", getattr(route, "path", "")))
    }
    assert {"apply", "backtest", "export", "import", "performance"} <= api_words
    assert {"new", "apply", "test"} <= web_words
    assert api_words | web_words <= RESERVED_RULE_IDS


def test_no_new_rule_takes_a_reserved_id_over_the_api_or_yaml(api: Api) -> None:
    analyst = api.headers(Role.analyst)
    for rule_id in sorted(RESERVED_RULE_IDS):
        r = api.client.post(f"{API}/rules", json=_rule(rule_id), headers=analyst)
        assert r.status_code == 422, (rule_id, r.text)
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "id"] and error["path"] == "id"
        assert f"'{rule_id}' is reserved" in error["msg"] and "choose another id" in error["msg"]
    text = yaml.safe_dump({"rules": [_rule("fine-rule"), _rule("new"), _rule("export")]})
    r = api.client.post(f"{API}/rules/import", content=text.encode(), headers={**analyst, **YAML})
    assert r.status_code == 422, r.text
    paths = {e["path"]: e["msg"] for e in r.json()["detail"]}
    assert set(paths) == {"rules[1].id", "rules[2].id"}
    assert "'new' is reserved" in paths["rules[1].id"]
    assert not _stored_ids(api) & {"fine-rule", "new", "export"}  # all or nothing
    # an id that merely contains a reserved word is an ordinary id
    r = api.client.post(f"{API}/rules", json=_rule("new-arms"), headers=analyst)
    assert r.status_code == 201, r.text


def test_a_rule_stored_under_a_reserved_id_before_keeps_working_over_the_api(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyst = api.headers(Role.analyst)
    with monkeypatch.context() as before:  # saved as it could be before the check
        before.setattr(rules_service, "RESERVED_RULE_IDS", frozenset())
        for rule_id in ("apply", "export"):
            r = api.client.post(f"{API}/rules", json=_rule(rule_id), headers=analyst)
            assert r.status_code == 201, r.text
    assert rules_service.RESERVED_RULE_IDS  # the check is back
    # a new version reaches the rule, not the action of the same word
    changed = {k: v for k, v in _rule("apply", "Arms chapter, changed").items() if k != "id"}
    r = api.client.put(f"{API}/rules/apply", json=changed, headers=analyst)
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["version"]) == ("apply", 2)
    r = api.client.get(f"{API}/rules/apply/versions", headers=analyst)
    assert r.status_code == 200 and [v["version"] for v in r.json()] == [1, 2]
    r = api.client.get(f"{API}/rules/export/performance", headers=analyst)
    assert r.status_code == 200 and r.json()["rule_id"] == "export"
    r = api.client.post(
        f"{API}/rules/export/deactivate", json={"reason": "renamed"}, headers=analyst
    )
    assert r.status_code == 200, r.text
    r = api.client.post(f"{API}/rules/export/activate", json={"reason": "back"}, headers=analyst)
    assert r.status_code == 200, r.text
    # the fixed routes still answer their own methods
    export = api.client.get(f"{API}/rules/export", headers=analyst)
    assert export.status_code == 200 and "id: apply" in export.text
    # an export holding them imports again (they are not new here)
    r = api.client.post(
        f"{API}/rules/import", content=export.text.encode(), headers={**analyst, **YAML}
    )
    assert r.status_code == 200, r.text
    assert {"apply", "export"} <= set(r.json()["unchanged"])


def test_the_rule_page_refuses_a_reserved_id_beside_the_id_field(api: Api) -> None:
    web = TestClient(api.app, follow_redirects=False)
    _web_login(web, username_for(Role.analyst), password_for(Role.analyst))
    form = web.get("/web/rules/new")
    token = CSRF.search(form.text)
    assert form.status_code == 200 and token is not None
    r = web.post(
        "/web/rules/new",
        data={
            "csrf_token": token.group(1),
            "id": "apply",
            "name": "Arms chapter",
            "severity": "low",
            "condition": yaml.safe_dump(CONDITION),
        },
    )
    assert r.status_code == 422, r.text
    error = re.search(r'<p class="field-error" id="err-id" role="alert">(.*?)</p>', r.text, re.S)
    assert error is not None
    assert "&#39;apply&#39; is reserved for the rules&#39; pages" in error.group(1)
    assert "apply" not in _stored_ids(api)
