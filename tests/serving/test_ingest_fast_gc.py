"""The server keeps its feature state out of the garbage collector's full passes
(`serving.app.HeapFreezer`): frozen once built at start-up, frozen again when a
background rebuild replaces it (here: after an outcome is corrected); the replaced
state is still freed, the rebuilt one gives the corrected features, and the frozen
objects go back to the collector when the server stops. Over HTTP, on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import gc
import shutil
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.auth import Role
from tests.serving.conftest import Api, Samples
from tests.serving.test_uat2_correction import (
    API,
    FIREARMS,
    RULE,
    _ingest,
    _post,
    _referral,
    _ship,
    _vector,
)
from tests.serving.test_uat_watchlists import _serve


def _frozen(obj: object) -> bool:
    """Whether `obj` (tracked by the collector) sits in the permanent generation: no
    generation the collector walks holds it."""
    assert gc.is_tracked(obj)
    return not any(o is obj for o in gc.get_objects())


def _wait(what: str, done: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_the_frozen_state_is_rebuilt_after_a_correction_and_frozen_again(
    db_url: str, tmp_path: Path, world: Path, samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARAVAN_MODEL_REFRESH_SECONDS", "0.2")  # (the freezer's check)
    data = tmp_path / "data"
    shutil.copytree(world, data)
    today = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    later = today + dt.timedelta(days=2)
    with _serve(db_url, data, users=True) as api:
        freezer = api.app.state.heap_freezer
        history = api.app.state.services.history
        _wait("the state was not frozen at start-up", lambda: freezer.freezes >= 1)
        assert gc.get_freeze_count() > 100_000
        first = history._state
        assert first is not None and _frozen(first)

        analyst = api.headers(Role.analyst)
        assert api.client.post(f"{API}/rules", json=RULE, headers=analyst).status_code == 201
        officer = api.headers(Role.officer)
        _ingest(api, _ship(samples, 1, "GC-A", today))
        rid = _referral(api, "GC-A", today)
        assert _post(api, rid, "claim", officer).status_code == 200
        assert _post(api, rid, "outcome", officer, **FIREARMS).status_code == 200
        assert _ingest(api, _ship(samples, 2, "GC-B", later))["must_inspect"] is True
        assert _vector(api, "GC-B")["consignee_arms_findings"] == 1.0
        fixed = _post(api, rid, "outcome/correct", officer, finding=False, reason="wrong truck")
        assert fixed.status_code == 200, fixed.text

        _wait(
            "the feature state was not rebuilt",
            lambda: history.rebuilds >= 1 and history._rebuilder is None,
        )
        _wait("the rebuilt state was not frozen", lambda: freezer.freezes >= 2)
        rebuilt = history._state
        assert rebuilt is not first and _frozen(rebuilt)
        # the replaced state holds no reference cycle: frozen, it is still freed
        gone = weakref.ref(first)
        del first
        assert gone() is None
        # the rebuilt (frozen) state scores with the corrected outcome
        live = _ingest(api, _ship(samples, 4, "GC-L", later))
        assert live["must_inspect"] is False
        assert _vector(api, "GC-L")["consignee_arms_findings"] == 0.0
        verify = api.client.get(f"{API}/audit/verify", headers=api.headers(Role.auditor))
        assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text
    # stopped: the frozen objects are the collector's again
    assert gc.get_freeze_count() == 0
    assert freezer.freezes == 0


def test_freezing_can_be_switched_off(make_api: Callable[..., Api]) -> None:
    api = make_api(gc_freeze=False)
    freezer = api.app.state.heap_freezer
    assert freezer.enabled is False
    time.sleep(0.5)  # (the state of an empty history is built at once)
    assert freezer.freezes == 0 and gc.get_freeze_count() == 0
