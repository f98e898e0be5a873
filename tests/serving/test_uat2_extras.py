"""UAT round 2, DS F15, F5, F6: the export columns an import keeps as features
(`extras`) and the history training sees.

- F15: categorical extras keep their codes across `caravan features` runs (a new
  value gets the next code, none is renumbered), the code tables are recorded with
  the feature set and with each trained model, and the feature-set version names
  the set of extras.
- F5: a model trained with extras is served: a declaration brings them in an
  optional `extras` object (checked against the model: unknown names and values of
  the wrong kind are refused with 422 naming the field), missing ones are scored as
  missing, categories are coded with the model's own code table; a model that does
  not record its code tables answers 503 naming the input, never 500.
- F6: `caravan validate` pulls the shipments (with goods lines and extras) and
  traveller records the API stored into raw/ first, once each, so that the training
  features count the same history serving counted.

Over HTTP on SQLite and PostgreSQL (F5, F6), with a small imported world (the
example export, 1,500 declarations)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from data_contracts.settings import DataLayout
from serving import orm as m
from serving.auth import Role
from serving.services import jsonable
from tests.conftest import ROOT
from tests.serving.conftest import OFFICE, Api, add_users, build_app
from tests.serving.test_uat2_correction import _vector

API = "/api/v1"
EXAMPLE = ROOT / "examples" / "byo"


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example export imported (extras: DUTY_PAID numeric, REGIME categorical),
    validated, its features built, a model trained and promoted (version 1)."""
    from pipelines.features import run_features
    from pipelines.importer import run_import
    from pipelines.modelling import run_promote, run_train
    from pipelines.validate import run_validate

    layout = DataLayout(tmp_path_factory.mktemp("byo") / "data")
    run_import(layout, EXAMPLE / "mapping.yaml", [EXAMPLE / "declarations.csv"])
    run_validate(layout, gx=False)
    run_features(layout)
    run_train(layout)
    run_promote(layout, "1", who="test", reason=None)
    return layout.root


def _copy(byo: Path, tmp_path: Path) -> DataLayout:
    root = tmp_path / "data"
    shutil.copytree(byo, root)
    return DataLayout(root)


def _scores(layout: DataLayout, version: str) -> tuple[pl.DataFrame, dict[str, str]]:
    from models.assess import registry
    from models.dataset import matrix
    from models.train import predict

    booster, mv = registry(layout).load(version)
    feats = pl.read_parquet(layout.features / "features.parquet")
    prob = predict(booster, matrix(feats, list(booster.feature_name())))
    return feats.select("shipment_id", pl.Series("p", prob)), mv.tags


# --------------------------------------------------------------------------- F15


def _later_export(tmp_path: Path, regime: str, n: int = 30) -> Path:
    """A later export: the last `n` declarations of the example under new ids,
    declared in January 2026, with the customs regime `regime`."""
    rows = pl.read_csv(EXAMPLE / "declarations.csv", separator=";", infer_schema=False)
    keep = rows["DECL_ID"].unique(maintain_order=True).tail(n)
    later = rows.filter(pl.col("DECL_ID").is_in(keep.implode())).with_columns(
        ("N" + pl.col("DECL_ID").str.slice(1)).alias("DECL_ID"),
        ("N" + pl.col("DECL_NO")).alias("DECL_NO"),
        pl.col("DECL_DATE").str.replace(r"\.\d{2}\.\d{4}", ".01.2026"),
        pl.col("INSPECTION_DATE").str.replace(r"\.\d{2}\.\d{4}", ".01.2026"),
        pl.lit(regime).alias("REGIME"),
    )
    path = tmp_path / "later.csv"
    later.write_csv(path, separator=";")
    return path


def test_a_new_category_in_a_later_export_keeps_the_codes_a_model_was_trained_with(
    byo: Path, tmp_path: Path
) -> None:
    from features.registry import feature_set_version
    from pipelines.features import run_features
    from pipelines.importer import run_import
    from pipelines.validate import run_validate

    layout = _copy(byo, tmp_path)
    before, tags = _scores(layout, "1")
    codes_before = pl.read_parquet(layout.features / "features.parquet").select(
        "shipment_id", "extra_REGIME"
    )
    meta = json.loads((layout.features / "feature_set.json").read_text())
    assert meta["extras"]["categorical"] == {"extra_REGIME": ["40", "51"]}
    # the model records the code tables it was trained with, and the feature set
    assert json.loads(tags["extras"]) == {
        "numeric": ["extra_DUTY_PAID"],
        "categorical": {"extra_REGIME": ["40", "51"]},
    }
    assert tags["feature_set_version"] == meta["feature_set_version"]
    assert "+x" in meta["feature_set_version"]

    # a later export brings a regime never seen ("10": sorted first)
    run_import(layout, EXAMPLE / "mapping.yaml", [_later_export(tmp_path, "10")])
    run_validate(layout, gx=False)
    run_features(layout)
    after_meta = json.loads((layout.features / "feature_set.json").read_text())
    # the known values keep their codes; the new one gets the next
    assert after_meta["extras"]["categorical"] == {"extra_REGIME": ["40", "51", "10"]}
    assert json.loads((layout.raw / "extras" / "codes.json").read_text()) == {
        "extra_REGIME": ["40", "51", "10"]
    }
    # (the set of extras is the same: the feature-set version is too)
    assert after_meta["feature_set_version"] == meta["feature_set_version"]
    feats = pl.read_parquet(layout.features / "features.parquet")
    new = feats.filter(pl.col("shipment_id").str.starts_with("N"))
    assert new.height == 30 and new["extra_REGIME"].unique().to_list() == [3]

    # every earlier shipment keeps its codes, so the same model version scores it
    # exactly as before (its inputs are the same numbers)
    same = codes_before.join(feats, on="shipment_id", suffix="_after")
    assert same.height == 1500
    assert (same["extra_REGIME"] == same["extra_REGIME_after"]).all()
    after, _ = _scores(layout, "1")
    joined = before.join(after, on="shipment_id", suffix="_after")
    assert joined.height == before.height == 1500
    assert np.array_equal(joined["p"].to_numpy(), joined["p_after"].to_numpy())

    # rebuilding features/ from scratch keeps the codes (kept in raw/extras/)
    shutil.rmtree(layout.features)
    run_features(layout)
    again = json.loads((layout.features / "feature_set.json").read_text())
    assert again["extras"]["categorical"] == {"extra_REGIME": ["40", "51", "10"]}

    # the version names the set of extras and their kinds
    numeric = {"numeric": ["extra_DUTY_PAID"]}
    both = {**numeric, "categorical": {"extra_REGIME": ["40"]}}
    as_text = {"numeric": [], "categorical": {"extra_DUTY_PAID": ["1"]}}
    versions = {
        feature_set_version(),
        feature_set_version(numeric),
        feature_set_version(both),
        feature_set_version(as_text),
    }
    assert len(versions) == 4
    assert feature_set_version(both) == feature_set_version(
        {**numeric, "categorical": {"extra_REGIME": ["40", "51", "10"]}}
    )


# --------------------------------------------------------------------------- F5


@contextmanager
def _serve(db_url: str, data: Path, *, users: bool = True) -> Iterator[Api]:
    app = build_app(db_url, data, max_body_bytes=2 * 1024 * 1024)
    with TestClient(app) as client:
        if users:
            add_users(app)
        yield Api(app, client)


def _inspect(api: Api, sid: str, day: dt.date) -> None:
    """Claim the shipment's referral and record an inspection without a finding."""
    admin = api.headers(Role.admin)
    queue = api.client.get(f"{API}/queues/{OFFICE}/{day}", headers=admin)
    assert queue.status_code == 200, queue.text
    (rid,) = [e["id"] for e in queue.json()["entries"] if e["shipment_id"] == sid]
    officer = api.headers(Role.officer)
    assert api.client.post(f"{API}/referrals/{rid}/claim", headers=officer).status_code == 200
    r = api.client.post(f"{API}/referrals/{rid}/outcome", json={"finding": False}, headers=officer)
    assert r.status_code == 200, r.text


def _body(data: Path, sid: str, at: dt.datetime, *, i: int = 0, **changes: Any) -> dict[str, Any]:
    """A declaration of the imported history (the `i`-th from the end) under a new
    id, declared at `at` in OFFICE, with what the export did not have filled in."""
    ships = pl.read_parquet(data / "validated" / "shipments.parquet")
    items = pl.read_parquet(data / "validated" / "items.parquet")
    ship = ships.row(ships.height - 1 - i, named=True)
    lines = items.filter(pl.col("shipment_id") == ship["shipment_id"]).to_dicts()
    body = {k: v for k, v in ship.items() if v is not None}
    body.update(
        shipment_id=sid,
        declaration_ref=f"REF-{sid}",
        office_code=OFFICE,
        declared_at=at,
        expected_arrival_at=at + dt.timedelta(hours=6),
        package_count=3,
        **changes,
    )
    body["items"] = [
        {
            **{k: v for k, v in line.items() if v is not None},
            "shipment_id": sid,
            "item_id": f"{sid}-{line['line_no']}",
        }
        for line in lines
    ]
    return dict(jsonable(body))


def _post(api: Api, body: dict[str, Any]) -> Any:
    return api.client.post(f"{API}/shipments", json=body, headers=api.headers(Role.admin))


def test_a_model_trained_with_extras_is_served_with_its_own_codes(
    db_url: str, tmp_path: Path, byo: Path
) -> None:
    layout = _copy(byo, tmp_path)
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    with _serve(db_url, layout.root) as api:
        given = _body(layout.root, "EXT-1", at, extras={"REGIME": "51", "DUTY_PAID": 1234.5})
        r = _post(api, given)
        assert r.status_code == 201, r.text
        vector = _vector(api, "EXT-1")
        assert vector["extra_REGIME"] == 2.0  # "51": the model's code
        assert vector["extra_DUTY_PAID"] == 1234.5
        # the same declaration scored in batch from the same vector: the same probability
        from models.assess import registry
        from models.train import predict

        booster, _ = registry(layout).load("1")
        names = list(booster.feature_name())
        x = np.array([[np.nan if vector[n] is None else vector[n] for n in names]])
        assert r.json()["probability"] == pytest.approx(float(predict(booster, x)[0]), abs=1e-12)
        with api.app.state.session_factory() as session:
            stored = session.get(m.Shipment, "EXT-1")
            assert stored is not None
            assert stored.payload["extras"] == {"REGIME": "51", "DUTY_PAID": 1234.5}
        # the same content again: unchanged
        assert _post(api, given).status_code == 200

        # none given: missing (a category's missing code 0, as in training; no number)
        r = _post(api, _body(layout.root, "EXT-2", at, i=1))
        assert r.status_code == 201, r.text
        assert _vector(api, "EXT-2")["extra_REGIME"] == 0.0
        assert _vector(api, "EXT-2")["extra_DUTY_PAID"] is None
        # a category the model never saw: read as one (not as another's code)
        r = _post(api, _body(layout.root, "EXT-3", at, i=2, extras={"REGIME": "10"}))
        assert r.status_code == 201, r.text
        assert _vector(api, "EXT-3")["extra_REGIME"] == -1.0

        # a name the model was not trained with, or a value of the wrong kind: 422
        r = _post(api, _body(layout.root, "EXT-4", at, extras={"CUSTOMS_VALUE": 5.0}))
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "extras", "CUSTOMS_VALUE"]
        assert "not an input of the served model" in error["msg"]
        assert "DUTY_PAID" in error["msg"] and "REGIME" in error["msg"]
        r = _post(api, _body(layout.root, "EXT-4", at, extras={"DUTY_PAID": "high"}))
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "extras", "DUTY_PAID"]
        r = _post(api, _body(layout.root, "EXT-4", at, extras={"REGIME": 40}))
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "extras", "REGIME"]
        r = _post(api, _body(layout.root, "EXT-4", at, extras={"REGIME": True}))
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"][:3] == ["body", "extras", "REGIME"]
        assert (
            api.client.get(f"{API}/shipments/EXT-4", headers=api.headers(Role.admin)).status_code
            == 404
        )

        # the batch route: the good row stored, the bad one reported by index and field
        r = api.client.post(
            f"{API}/shipments/batch",
            json={
                "records": [
                    _body(layout.root, "EXT-5", at, i=3, extras={"REGIME": "40"}),
                    _body(layout.root, "EXT-6", at, i=4, extras={"NOPE": "x"}),
                ]
            },
            headers=api.headers(Role.admin),
        )
        assert r.status_code == 200, r.text
        assert [s["shipment_id"] for s in r.json()["stored"]] == ["EXT-5"]
        assert [(e["index"], e["field"]) for e in r.json()["errors"]] == [(1, "extras.NOPE")]
        assert _vector(api, "EXT-5")["extra_REGIME"] == 1.0


def test_a_model_without_its_code_tables_answers_503_naming_the_input(
    db_url: str, tmp_path: Path, byo: Path
) -> None:
    """A version trained before the code tables were kept with the model cannot code
    the categories a declaration brings: 503 naming the input, nothing stored."""
    from models.assess import registry
    from models.registry import MODEL_NAME

    layout = _copy(byo, tmp_path)
    registry(layout).client().delete_model_version_tag(MODEL_NAME, "1", "extras")
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    with _serve(db_url, layout.root) as api:
        r = _post(api, _body(layout.root, "OLD-1", at))
        assert r.status_code == 503, r.text
        assert "extra_" in r.json()["detail"] and "retrain" in r.json()["detail"]
        r = api.client.post(
            f"{API}/shipments/batch",
            json={"records": [_body(layout.root, "OLD-2", at)]},
            headers=api.headers(Role.admin),
        )
        assert r.status_code == 503, r.text
        with api.app.state.session_factory() as session:
            assert session.get(m.Shipment, "OLD-1") is None


# --------------------------------------------------------------------------- F6

TRADER = "990000000777"
TRAVELLER = {
    "traveller_record_id": "API-TR-1",
    "surname": "DZHAKSYBEKOV",
    "given_names": "SUHROB",
    "date_of_birth": "1977-08-24",
    "nationality": "KZ",
    "document_type": "passport",
    "document_number": "N61656091",
    "document_country": "KZ",
    "booked_at": None,
    "departure_at": None,  # set in the test
    "route": ["TAS", "ALA"],
    "route_countries": ["UZ", "KZ"],
    "mode": "air",
    "one_way": False,
}
RULE = {
    "id": "large-invoice",
    "name": "Very large invoice",
    "severity": "must_inspect",
    "condition": {"field": "invoice_amount", "op": "ge", "value": 900000},
}


def test_the_training_history_holds_every_shipment_the_api_stored(
    db_url: str, tmp_path: Path, byo: Path
) -> None:
    from pipelines.features import run_features
    from pipelines.validate import run_validate

    layout = _copy(byo, tmp_path)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first_at, second_at = now - dt.timedelta(hours=2), now - dt.timedelta(hours=1)
    trader = {"consignee_id": TRADER, "consignee_name": TRADER}
    with _serve(db_url, layout.root) as api:
        admin = api.headers(Role.admin)
        rule = api.client.post(f"{API}/rules", json=RULE, headers=api.headers(Role.analyst))
        assert rule.status_code == 201, rule.text
        big = {"invoice_amount": 1e6}  # (in the queue: the rule must have it inspected)
        first = _body(layout.root, "HIST-1", first_at, extras={"REGIME": "51"}, **big, **trader)
        second = _body(
            layout.root,
            "HIST-2",
            second_at,
            i=1,
            extras={"DUTY_PAID": 99.5},
            **big,
            **trader,
        )
        third = _body(layout.root, "HIST-3", now - dt.timedelta(minutes=30), i=2)  # no extras
        for body in (first, second, third):
            assert _post(api, body).status_code == 201
        served_extras = {sid: _vector(api, sid) for sid in ("HIST-1", "HIST-2", "HIST-3")}
        traveller = {**TRAVELLER, "departure_at": (now - dt.timedelta(days=1)).isoformat()}
        r = api.client.post(f"{API}/travellers", json=traveller, headers=admin)
        assert r.status_code == 201, r.text
        served = _vector(api, "HIST-2")
        assert served["consignee_shipments_30d"] == 1.0  # the first one counted
        # only the second is inspected: its outcome (with its shipment) goes to raw/
        _inspect(api, "HIST-2", second_at.date())

    run = run_validate(layout, gx=False, database_url=db_url)
    # the shipments never inspected and the traveller reached raw/; the second was
    # written with its outcome already (without its extras), so only its extras are
    lines = len(first["items"]) + len(third["items"])
    assert run.pulled == {"shipments": 2, "items": lines, "extras": 2, "travellers": 1}
    pulled = sorted((layout.raw / "shipments").glob("api-export-*.parquet"))
    assert len(pulled) == 1
    assert pl.read_parquet(pulled[0])["shipment_id"].to_list() == ["HIST-1", "HIST-3"]
    extras = pl.read_parquet(layout.raw / "extras" / pulled[0].name).sort("shipment_id")
    assert extras.to_dicts() == [
        {"shipment_id": "HIST-1", "DUTY_PAID": None, "REGIME": "51"},
        {"shipment_id": "HIST-2", "DUTY_PAID": 99.5, "REGIME": None},
    ]
    validated = pl.read_parquet(layout.validated / "shipments.parquet")
    assert validated.filter(pl.col("shipment_id").str.starts_with("HIST-")).height == 3
    travellers = pl.read_parquet(layout.validated / "travellers.parquet")
    assert travellers["traveller_record_id"].to_list() == ["API-TR-1"]
    quarantined = pl.read_parquet(layout.quarantine / "shipments.parquet")
    assert quarantined.height == 0
    # exactly once: validating again pulls nothing
    assert run_validate(layout, gx=False, database_url=db_url).pulled == {}
    assert len(list((layout.raw / "shipments").glob("api-export-*.parquet"))) == 1
    # an outcome recorded after the pull does not write its shipment a second time
    with _serve(db_url, layout.root, users=False) as api:
        _inspect(api, "HIST-1", first_at.date())
    written = [p.name for p in (layout.raw / "shipments").iterdir() if "HIST-1" in p.name]
    assert written == [], written
    assert run_validate(layout, gx=False, database_url=db_url).pulled == {}
    assert pl.read_parquet(layout.quarantine / "shipments.parquet").height == 0
    assert pl.read_parquet(layout.quarantine / "items.parquet").height == 0
    validated = pl.read_parquet(layout.validated / "shipments.parquet")
    assert validated.filter(pl.col("shipment_id") == "HIST-1").height == 1
    outcomes = pl.read_parquet(layout.validated / "outcomes.parquet")
    assert sorted(
        outcomes.filter(pl.col("shipment_id").str.starts_with("HIST-"))["shipment_id"]
    ) == [
        "HIST-1",
        "HIST-2",
    ]

    run_features(layout)
    feats = pl.read_parquet(layout.features / "features.parquet")
    row = feats.filter(pl.col("shipment_id") == "HIST-2").row(0, named=True)
    history = [n for n in served if n.startswith(("consignee_", "consignor_", "declarant_"))]
    assert "consignee_shipments_30d" in history
    trained = {n: (None if row[n] is None else float(row[n])) for n in history}
    # (equal up to the last bit of a day count: the same numbers computed in batch)
    assert trained == pytest.approx({n: served[n] for n in history}, rel=1e-12, abs=1e-12)
    # the extras are features too, the same numbers serving scored with (a category
    # given, a category not given, a number given, none given)
    for sid, vector in served_extras.items():
        row = feats.filter(pl.col("shipment_id") == sid).row(0, named=True)
        for name in ("extra_REGIME", "extra_DUTY_PAID"):
            value = None if row[name] is None else float(row[name])
            assert value == vector[name], (sid, name)
    assert served_extras["HIST-1"]["extra_REGIME"] == 2.0
    assert served_extras["HIST-2"]["extra_DUTY_PAID"] == 99.5
