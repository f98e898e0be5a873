"""Queue settings are checked when read (supervisor round 2, S6; ops F4): a value out
of range stops the server at start, naming the setting, instead of a 500 on an
officer's queue later."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.services import QueueSettings
from tests.serving.conftest import build_app


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("CARAVAN_EXPLORATION_SHARE", "1.5", "exploration_share"),
        ("CARAVAN_EXPLORATION_SHARE", "-0.1", "exploration_share"),
        ("CARAVAN_QUEUE_CAPACITY", "-3", "queue_capacity"),
        ("CARAVAN_OVERDUE_HOURS", "0", "overdue_hours"),
        ("CARAVAN_OFFICE_CAPACITIES", '{"KZ-KHORGOS": -1}', "office_capacities"),
    ],
)
def test_a_setting_out_of_range_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        QueueSettings()
    assert field in str(caught.value)


def test_good_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARAVAN_EXPLORATION_SHARE", "0")
    monkeypatch.setenv("CARAVAN_OFFICE_CAPACITIES", '{"KZ-KHORGOS": 40}')
    settings = QueueSettings()
    assert settings.exploration_share == 0.0 and settings.office_capacities == {"KZ-KHORGOS": 40}


def test_the_server_does_not_start_with_a_bad_share(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("CARAVAN_EXPLORATION_SHARE", "5")  # "5 %" meant, 500 % read
    app = build_app(db_url, tmp_path / "data")
    with pytest.raises(ValidationError, match="exploration_share"), TestClient(app):
        pass
