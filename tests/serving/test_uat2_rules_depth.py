"""A rule nested far beyond the engine's depth limit gets the same 422 as a slightly
too deep one, not a 500 (security review round 2, F12)."""

from __future__ import annotations

from typing import Any

import pytest

from serving.auth import Role
from tests.serving.conftest import Api

API = "/api/v1"


def _nested(levels: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"field": "origin_country", "op": "eq", "value": "AF"}
    for _ in range(levels):
        condition = {"all": [condition]}
    return condition


@pytest.mark.parametrize("levels", [20, 130, 400])
def test_deep_conditions_are_refused_with_422(api: Api, levels: int) -> None:
    analyst = api.headers(Role.analyst)
    body = {"name": "deep", "severity": "info", "condition": _nested(levels)}
    created = api.client.post(
        f"{API}/rules", json={**body, "id": f"deep-{levels}"}, headers=analyst
    )
    assert created.status_code == 422, created.text
    assert "nested more than 12 levels deep" in created.text
    ok = api.client.post(
        f"{API}/rules", json={**body, "id": "flat", "condition": _nested(1)}, headers=analyst
    )
    assert ok.status_code == 201, ok.text
    changed = api.client.put(f"{API}/rules/flat", json=body, headers=analyst)
    assert changed.status_code == 422 and "nested more than 12 levels deep" in changed.text
