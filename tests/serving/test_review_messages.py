"""Messages found wrong in a review of the running demo, over HTTP on SQLite and
PostgreSQL: a rules file with a top-level key besides `rules` (YAML anchors kept
there are read, anything else is named, not ignored); a malformed UN XML upload says
where and why as the CLI does; an infinite or NaN rule value is named as such (not
"null"); a forced promotion over the API without a reason names the API's field,
not the CLI's option; the 409 of an imported `active` status says what the
activate/deactivate endpoints take."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from data_contracts.loaders import ReferenceFileError
from data_contracts.loaders.un_sc import load_un_consolidated
from data_contracts.settings import DataLayout
from models.promotion import ReasonRequiredError, plan_promotion
from serving.auth import Role
from tests.serving.conftest import Api
from tests.serving.test_uat_rules import API, _import
from tests.serving.test_uat_rules import _paths as _msgs

RULE = """  - id: {id}
    name: b
    severity: high
    condition: {{field: mode, op: in, value: {value}}}
"""


# --------------------------------------------------------------------------- 1


def test_a_rules_file_may_keep_shared_values_beside_its_rules_but_nothing_else(api: Api) -> None:
    anchors = "modes: &m [rail, road]\nrules:\n" + RULE.format(id="rv-alias", value="*m")
    r = _import(api, anchors)
    assert r.status_code == 200, r.text
    assert r.json()["created"][0]["condition"]["value"] == ["rail", "road"]
    # anchors nested in a holder are read too (one of them used is enough)
    nested = "shared:\n  modes: &m [rail]\n  unused: [sea]\nrules:\n" + RULE.format(
        id="rv-nested", value="*m"
    )
    assert _import(api, nested).status_code == 200

    # a header the import does not read, or a misspelt key holding rules: named
    header = "version: 3\nrules:\n" + RULE.format(id="rv-header", value="[rail]")
    r = _import(api, header)
    assert r.status_code == 422, r.text
    msg = _msgs(r)["version"]
    assert "unexpected top-level key 'version'" in msg and "only 'rules' is read" in msg
    typo = (
        "rules:\n"
        + RULE.format(id="rv-one", value="[rail]")
        + "rule:\n"
        + RULE.format(id="rv-two", value="[road]")
    )
    r = _import(api, typo)
    assert r.status_code == 422 and set(_msgs(r)) == {"rule"}, r.text
    # two `rules:` blocks (YAML would keep the last): refused, not half imported
    twice = "rules:\n" + RULE.format(id="rv-a", value="[rail]")
    twice += "rules:\n" + RULE.format(id="rv-b", value="[road]")
    r = _import(api, twice)
    assert r.status_code == 422 and "appears 2 times" in _msgs(r)["rules"], r.text
    listed = api.client.get(f"{API}/rules", headers=api.headers(Role.analyst)).json()
    assert {x["id"] for x in listed} == {"rv-alias", "rv-nested"}


# --------------------------------------------------------------------------- 2


def test_a_malformed_un_list_says_where_and_why_as_the_cli_does(api: Api, tmp_path: Path) -> None:
    body = (
        b"<?xml version='1.0' encoding='UTF-8'?>\n<CONSOLIDATED_LIST><INDIVIDUALS>\n"
        b"<INDIVIDUAL><DATAID>990001</DATAID><FIRST_NAME>Sekretnyi Imya</FIRST_NAME>"
        b"<SECOND_NAME>Zhorab"
    )
    r = api.client.post(
        f"{API}/watchlists/un",
        content=body,
        headers={**api.headers(Role.analyst), "Content-Type": "application/xml"},
    )
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert re.fullmatch(r"not a readable XML document: [a-z ()]+: line 3, column \d+", msg), msg
    assert "Sekretnyi" not in msg and "Zhorab" not in msg  # nothing of the document
    path = tmp_path / "un.xml"
    path.write_bytes(body)
    with pytest.raises(ReferenceFileError) as cli:
        load_un_consolidated(path)
    assert msg.split(": ", 1)[1] in str(cli.value)  # the reason and position the CLI gives


# --------------------------------------------------------------------------- 3


def _rule_json(value: str, rule_id: str | None) -> str:
    """A rule as JSON text, its condition's value written as given (`1e400`, `NaN`)."""
    condition = f'{{"field": "gross_mass_kg", "op": "gt", "value": {value}}}'
    head = f'"id": "{rule_id}", ' if rule_id else ""
    return f'{{{head}"name": "x", "severity": "low", "condition": {condition}}}'


@pytest.mark.parametrize(
    ("raw", "yaml_value", "got"),
    [
        ("1e400", ".inf", "got infinity"),
        ("-1e400", "-.inf", "got -infinity"),
        ("NaN", ".nan", "got NaN"),
    ],
)
def test_an_infinite_or_nan_rule_value_is_named_not_null(
    api: Api, raw: str, yaml_value: str, got: str
) -> None:
    analyst = {**api.headers(Role.analyst), "Content-Type": "application/json"}
    r = api.client.post(f"{API}/rules", content=_rule_json(raw, "rv-inf"), headers=analyst)
    assert r.status_code == 422, r.text
    msg = _msgs(r)["condition.value"]
    assert "expected a finite number" in msg and got in msg and "null" not in msg, msg
    made = api.client.post(f"{API}/rules", content=_rule_json("1e3", "rv-inf"), headers=analyst)
    assert made.status_code == 201, made.text
    r = api.client.put(f"{API}/rules/rv-inf", content=_rule_json(raw, None), headers=analyst)
    assert r.status_code == 422 and got in _msgs(r)["condition.value"], r.text
    # a draft tested on the history (backtest) the same
    draft = '{"rule": ' + _rule_json(raw, None) + "}"
    r = api.client.post(f"{API}/rules/backtest", content=draft, headers=analyst)
    assert r.status_code == 422 and got in r.text and "got null" not in r.text, r.text
    # and in a rules file (YAML's .inf and .nan)
    text = "rules:\n- id: rv-y\n  name: x\n  severity: low\n  condition: "
    text += f"{{field: gross_mass_kg, op: gt, value: {yaml_value}}}\n"
    r = _import(api, text)
    assert r.status_code == 422 and got in _msgs(r)["rules[0].condition.value"], r.text


# --------------------------------------------------------------------------- 4


def test_a_forced_promotion_without_a_reason_names_the_api_field(api: Api, tmp_path: Path) -> None:
    r = api.client.post(
        f"{API}/models/2/promote", json={"force": True}, headers=api.headers(Role.data_scientist)
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "reason"]
    assert '"reason"' in detail["msg"] and "--reason" not in detail["msg"], detail
    # the CLI keeps its option
    with pytest.raises(ReasonRequiredError) as cli:
        plan_promotion(DataLayout(tmp_path), "2", who="ds", reason=" ", force=True)
    assert "(--reason TEXT)" in str(cli.value)


# --------------------------------------------------------------------------- 5


def test_an_imported_active_status_says_what_activate_and_deactivate_take(api: Api) -> None:
    analyst = api.headers(Role.analyst)
    rule = "rules:\n- id: rv-act\n  name: x\n  severity: low\n"
    rule += "  condition: {field: mode, op: eq, value: rail}\n"
    assert _import(api, rule).status_code == 200
    off = api.client.post(f"{API}/rules/rv-act/deactivate", json={"reason": "x"}, headers=analyst)
    assert off.status_code == 200, off.text
    r = _import(api, rule.replace("  name:", "  active: true\n  name:"))
    assert r.status_code == 409, r.text
    msg = _msgs(r)["rules[0].active"]
    # activate takes no reason it requires (an optional one is recorded)
    assert "POST /api/v1/rules/rv-act/activate" in msg and "(and a reason)" not in msg, msg
    assert api.client.post(f"{API}/rules/rv-act/activate", headers=analyst).status_code == 200
    r = _import(api, rule.replace("  name:", "  active: false\n  name:"))
    assert r.status_code == 409, r.text
    msg = _msgs(r)["rules[0].active"]
    assert "POST /api/v1/rules/rv-act/deactivate" in msg and '"reason"' in msg, msg
