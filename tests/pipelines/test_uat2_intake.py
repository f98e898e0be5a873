"""Intake defects of the second acceptance round (security review) on files:

* sec F5: `caravan validate` quarantines text holding a bidirectional formatting
  character (a name held backwards behind a RIGHT-TO-LEFT OVERRIDE shows as the
  listed name), a control character, or invisible characters only, naming the
  column and the character, as the API refuses them; other invisible characters
  within visible text are kept.
* sec F9: ids may not hold "/" (they are part of web addresses); the quarantine
  message says so; declaration_ref keeps its slashes.
* sec F10: every file holding a contract's personal columns (shipments: a natural
  person's birth date and document number; travellers) is readable by its owner only,
  wherever it is written (raw/ by generate and import, validated/, quarantine/);
  the others keep the usual mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import polars as pl
import pytest

from data_contracts.schemas import CONTRACTS
from data_contracts.settings import DataLayout
from tests import factories as f
from tests.conftest import ROOT, caravan

EXAMPLE = ROOT / "examples" / "byo"
LISTED = "Bakhtiyor Karimovich Tashmatov"
RLO, PDF = "\u202e", "\u202c"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _usual() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_raw(layout: DataLayout, tables: dict[str, list[dict[str, object]]]) -> None:
    layout.raw.mkdir(parents=True, exist_ok=True)
    for table, rows in tables.items():
        f.frame(table, rows).write_parquet(layout.raw / f"{table}.parquet")


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> DataLayout:
    """Raw files with the tricks of the findings, through `caravan validate`."""
    layout = DataLayout(tmp_path_factory.mktemp("uat2-validate"))
    ships = [
        f.shipment(shipment_id="OK-1", consignee_name=LISTED),
        f.shipment(shipment_id="BIDI-1", consignee_name=RLO + LISTED[::-1] + PDF),
        f.shipment(shipment_id="BIDI-2", consignor_address="Almaty\u2067 Abaya 1\u2069"),
        f.shipment(shipment_id="BIDI-3", declarant_name="Broker\u200f LLP"),
        f.shipment(shipment_id="CTRL-1", consignee_name="Vostok\u0007 Logistics"),
        f.shipment(shipment_id="BLANK-1", consignee_name="\u200b\u2060"),
        f.shipment(shipment_id="ZW-1", consignee_name="Bakh\u200btiyor Kari\u00admovich Tashmatov"),
        f.shipment(shipment_id="ZW-2", consignee_name="Bakh\u200btiyor Kari\u00admovich Tashmatov"),
        f.shipment(shipment_id="A/../OK-1"),
        f.shipment(shipment_id="10702020/271126/0012345"),
        f.shipment(
            shipment_id="10702020-271126-0012345", declaration_ref="10702020/271126/0012345"
        ),
    ]
    items = [
        f.item(item_id=f"{s['shipment_id']}-1", shipment_id=s["shipment_id"])
        for s in ships
        if "/" not in str(s["shipment_id"])
    ]
    items.append(f.item(item_id="OK-1/2", shipment_id="OK-1", line_no=2))
    items.append(
        f.item(item_id="ZW-1-2", shipment_id="ZW-1", line_no=2, description="pist\u202eol")
    )
    travellers = [
        f.traveller(traveller_record_id="T-1"),
        f.traveller(traveller_record_id="T/2"),
        f.traveller(traveller_record_id="T-3", surname=RLO + "votamhsaT" + PDF),
    ]
    _write_raw(layout, {"shipments": ships, "items": items, "travellers": travellers})
    caravan("validate", "--no-gx", data=layout.root)
    return layout


def _quarantined(layout: DataLayout, table: str) -> dict[str, tuple[str, str]]:
    q = pl.read_parquet(layout.quarantine / f"{table}.parquet")
    key = CONTRACTS[table].id_column
    return {r[key]: (r["_rule"], r["_message"]) for r in q.iter_rows(named=True)}


def _accepted(layout: DataLayout, table: str) -> list[str]:
    key = CONTRACTS[table].id_column
    return pl.read_parquet(layout.validated / f"{table}.parquet")[key].to_list()


# --------------------------------------------------------------------------- F5


def test_validate_quarantines_bidirectional_characters_naming_column_and_character(
    validated: DataLayout,
) -> None:
    q = _quarantined(validated, "shipments")
    rule, message = q["BIDI-1"]
    assert rule == "text:consignee_name"
    assert message.startswith("consignee_name holds the bidirectional formatting character")
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in message
    assert q["BIDI-2"][0] == "text:consignor_address" and "U+2067" in q["BIDI-2"][1]
    assert q["BIDI-3"][0] == "text:declarant_name" and "U+200F" in q["BIDI-3"][1]
    t = _quarantined(validated, "travellers")
    assert t["T-3"][0] == "text:surname" and "U+202E" in t["T-3"][1]


def test_validate_refuses_what_the_api_refuses_and_keeps_the_rest(
    validated: DataLayout,
) -> None:
    q = _quarantined(validated, "shipments")
    assert q["CTRL-1"] == (
        "text:consignee_name",
        "consignee_name holds the control character U+0007; remove it",
    )
    assert q["BLANK-1"][0] == "text:consignee_name" and "invisible" in q["BLANK-1"][1]
    # a goods line with a bidirectional character rejects its declaration
    items = _quarantined(validated, "items")
    assert items["ZW-1-2"][0] == "text:description"
    assert q["ZW-1"][0] == "child_rejected:items" and "U+202E" in q["ZW-1"][1]
    # a zero-width space or soft hyphen within a name is kept, as the API keeps it
    accepted = _accepted(validated, "shipments")
    assert "ZW-2" in accepted
    ships = pl.read_parquet(validated.validated / "shipments.parquet")
    name = ships.filter(pl.col("shipment_id") == "ZW-2")["consignee_name"].item()
    assert name == "Bakh\u200btiyor Kari\u00admovich Tashmatov"
    assert "OK-1" not in accepted  # its line OK-1/2 has a "/" in its id (below)
    assert "10702020-271126-0012345" in accepted


# --------------------------------------------------------------------------- F9


def test_validate_quarantines_ids_with_a_slash_saying_why(validated: DataLayout) -> None:
    q = _quarantined(validated, "shipments")
    for sid in ("A/../OK-1", "10702020/271126/0012345"):
        rule, message = q[sid]
        assert rule == "pattern:shipment_id"
        assert f"'/' is not allowed in shipment_id ('{sid}')" in message
        assert "declaration_ref" in message
    items = _quarantined(validated, "items")
    assert items["OK-1/2"][0] == "pattern:item_id"
    assert "'/' is not allowed in item_id" in items["OK-1/2"][1]
    t = _quarantined(validated, "travellers")
    assert t["T/2"][0] == "pattern:traveller_record_id"
    assert "'/' is not allowed in traveller_record_id" in t["T/2"][1]
    assert _accepted(validated, "travellers") == ["T-1"]
    ships = pl.read_parquet(validated.validated / "shipments.parquet")
    kept = ships.filter(pl.col("shipment_id") == "10702020-271126-0012345")
    assert kept["declaration_ref"].to_list() == ["10702020/271126/0012345"]


# --------------------------------------------------------------------------- F10


def test_validated_and_quarantined_personal_data_is_private(validated: DataLayout) -> None:
    for folder in (validated.validated, validated.quarantine):
        assert _mode(folder / "shipments.parquet") == 0o600
        assert _mode(folder / "travellers.parquet") == 0o600
        assert _mode(folder / "items.parquet") == _usual()
        assert _mode(folder / "outcomes.parquet") == _usual()


def test_generated_personal_data_is_private(tmp_path: Path) -> None:
    from pipelines.generate import run_generate
    from pipelines.synthetic import WorldConfig

    layout = DataLayout(tmp_path / "data")
    world, _counts = run_generate(layout, WorldConfig(n_shipments=300, seed=3))
    # the shipments of the world do hold natural persons' birth dates
    assert world.shipments["consignee_birth_date"].null_count() < world.shipments.height
    assert _mode(layout.raw / "shipments.parquet") == 0o600
    assert _mode(layout.raw / "travellers.parquet") == 0o600
    assert _mode(layout.raw / "items.parquet") == _usual()
    assert _mode(layout.truth / "truth.parquet") == _usual()


def test_imported_shipments_are_private(tmp_path: Path) -> None:
    lines = (EXAMPLE / "declarations.csv").read_text(encoding="utf-8").splitlines()
    export = tmp_path / "export.csv"
    export.write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
    layout = DataLayout(tmp_path / "data")
    caravan("import", str(export), "--mapping", str(EXAMPLE / "mapping.yaml"), data=layout.root)
    ships = list((layout.raw / "shipments").glob("*.parquet"))
    items = list((layout.raw / "items").glob("*.parquet"))
    assert ships and items
    assert all(_mode(p) == 0o600 for p in ships)
    assert all(_mode(p) == _usual() for p in items)
    # and so are the files `caravan validate` makes of them
    caravan("validate", "--no-gx", data=layout.root)
    assert _mode(layout.validated / "shipments.parquet") == 0o600
    assert _mode(layout.quarantine / "shipments.parquet") == 0o600


def test_a_private_file_is_never_readable_by_others_while_written(tmp_path: Path) -> None:
    """The temporary file is created 0600 (not narrowed after writing), also when a
    world-readable leftover of an interrupted run lies in its place."""
    from pipelines.validate import write_parquet

    path = tmp_path / "shipments.parquet"
    leftover = path.with_suffix(".parquet.tmp")
    leftover.write_bytes(b"old")
    leftover.chmod(0o644)
    frame = f.frame("shipments", [f.shipment()])
    write_parquet(frame, path)
    assert _mode(path) == 0o600 and not leftover.exists()
    assert pl.read_parquet(path)["shipment_id"].to_list() == ["S-0001"]
