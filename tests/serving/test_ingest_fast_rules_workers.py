"""The active rules a server holds (compiled once, kept until the rules change) follow
every change another worker makes to the shared database: a new rule, a new version,
a deactivation and a reactivation are each applied to the very next shipment this
server ingests. Over HTTP, two apps on one database, SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from serving.auth import Role
from tests.serving.conftest import Api, Samples, api_on, build_app, payload

API = "/api/v1"
HEAVY = {"field": "gross_mass_kg", "op": "gt", "value": 0}
NEVER = {"field": "gross_mass_kg", "op": "lt", "value": 0}
RULE = {"id": "fast-any-mass", "name": "Any mass", "severity": "high", "condition": HEAVY}


def _hits(api: Api, samples: Samples, i: int) -> list[tuple[str, int]]:
    body = payload(samples, i, f"RW-{i}")
    r = api.client.post(f"{API}/shipments", json=body, headers=api.headers(Role.admin))
    assert r.status_code == 201, r.text
    return [(h["rule_id"], h["rule_version"]) for h in r.json()["rule_hits"]]


def _rule(api: Api, method: str, path: str, body: dict[str, Any] | None = None) -> None:
    r = api.client.request(
        method, f"{API}/rules{path}", json=body, headers=api.headers(Role.analyst)
    )
    assert r.status_code in (200, 201), r.text


def test_rules_changed_by_another_worker_apply_to_the_next_shipment(
    db_url: str, tmp_path: Path, world: Path, samples: Samples
) -> None:
    with api_on(db_url, world, tmp_path / "one") as one:
        assert _hits(one, samples, 0) == []  # (its rules are cached now)
        shutil.copytree(world, tmp_path / "two")
        app = build_app(db_url, tmp_path / "two", max_body_bytes=2 * 1024 * 1024)
        with TestClient(app) as client:  # another worker (the users exist)
            two = Api(app, client)
            _rule(two, "POST", "", RULE)
            assert _hits(one, samples, 1) == [(RULE["id"], 1)]
            fields = {k: v for k, v in RULE.items() if k != "id"}
            _rule(two, "PUT", f"/{RULE['id']}", {**fields, "condition": NEVER})
            assert _hits(one, samples, 2) == []
            _rule(two, "PUT", f"/{RULE['id']}", {**fields, "name": "Any mass again"})
            assert _hits(one, samples, 3) == [(RULE["id"], 3)]
            _rule(two, "POST", f"/{RULE['id']}/deactivate", {"reason": "retired for the test"})
            assert _hits(one, samples, 4) == []
            _rule(two, "POST", f"/{RULE['id']}/activate")
            assert _hits(one, samples, 5) == [(RULE["id"], 3)]
