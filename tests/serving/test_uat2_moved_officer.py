"""An officer moved to another office, no longer an officer, or disabled hands back
the referrals they held claimed in their old office: each release is audited, and
the post's colleagues can take them again (supervisor round 2, S2)."""

from __future__ import annotations

from typing import Any

import pytest

from serving.auth import Role
from tests.serving.conftest import Api, Samples, payload
from tests.serving.test_uat_queue import API, QUEUE, _audit, _batch, _capacity, _second_officer


def _claimed_by_officer2(api: Api, samples: Samples, prefix: str) -> tuple[int, dict[str, str]]:
    _capacity(api, 5)
    _batch(api, [payload(samples, i, f"{prefix}-{i}") for i in range(3)])
    officer2 = _second_officer(api)
    entries = api.client.get(QUEUE, headers=officer2).json()["entries"]
    ref = entries[0]["id"]
    claimed = api.client.post(f"{API}/referrals/{ref}/claim", headers=officer2)
    assert claimed.status_code == 200 and claimed.json()["claimed_by"] == "officer2"
    return ref, officer2


@pytest.mark.parametrize(
    ("change", "why"),
    [({"office_code": "KZ-DOSTYK"}, "office_code"), ({"active": False}, "active")],
)
def test_a_moved_or_disabled_officer_hands_back_their_claims(
    world_api: Api, samples: Samples, change: dict[str, Any], why: str
) -> None:
    api = world_api
    ref, _officer2 = _claimed_by_officer2(api, samples, f"MOVE-{why}")
    admin = api.headers(Role.admin)
    r = api.client.patch(f"{API}/users/officer2", json=change, headers=admin)
    assert r.status_code == 200, r.text
    entry = next(
        e
        for e in api.client.get(QUEUE, headers=api.headers(Role.officer)).json()["entries"]
        if e["id"] == ref
    )
    assert entry["status"] == "open" and entry["claimed_by"] is None
    released = [
        e
        for e in _audit(api, kind="queue_decision")
        if e["payload"]["action"] == "release" and e["payload"]["referral_id"] == ref
    ]
    assert len(released) == 1
    assert released[0]["actor"] == "admin1" and released[0]["payload"]["claimed_by"] == "officer2"
    assert why in released[0]["payload"]["because"]["user_change"]
    # a colleague of the post takes it again
    again = api.client.post(f"{API}/referrals/{ref}/claim", headers=api.headers(Role.officer))
    assert again.status_code == 200 and again.json()["claimed_by"] == "officer1"


def test_a_name_change_keeps_the_claims(world_api: Api, samples: Samples) -> None:
    api = world_api
    ref, officer2 = _claimed_by_officer2(api, samples, "KEEP")
    r = api.client.patch(
        f"{API}/users/officer2", json={"display_name": "Renamed"}, headers=api.headers(Role.admin)
    )
    assert r.status_code == 200, r.text
    entries = api.client.get(QUEUE, headers=officer2).json()["entries"]
    assert next(e for e in entries if e["id"] == ref)["claimed_by"] == "officer2"
