"""The Great Expectations suites, built from the same rules, agree with the row routing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from data_contracts.gx_report import run_suites, write_report
from data_contracts.readers import from_frame
from data_contracts.schemas import CONTRACTS
from data_contracts.validate import validate_tables
from tests import factories as f
from tests.data_contracts.test_rules import BAD_ITEMS, BAD_OUTCOMES, BAD_SHIPMENTS, BAD_TRAVELLERS

# pattern:shipment_id rows are left out of the fixture (their id is the change);
# route lengths have no GX expectation; pandas reads NaN as missing, so GX's
# between-check cannot see the NaN invoice amount that the Polars rule rejects.
NO_GX_TWIN = {"pattern:shipment_id", "route_mismatch:route_countries", "positive:invoice_amount"}


def test_gx_finds_every_violation_the_rules_find(tmp_path: Path) -> None:
    ships = [
        f.shipment(shipment_id=f"S-{i}", **change)
        for i, (change, _) in enumerate(BAD_SHIPMENTS)
        if "shipment_id" not in change
    ]
    ships.append(f.shipment())
    items = [f.item(item_id=f"I-{i}", **change) for i, (change, _) in enumerate(BAD_ITEMS)]
    travellers = [
        f.traveller(traveller_record_id=f"T-{i}", **change)
        for i, (change, _) in enumerate(BAD_TRAVELLERS)
    ]
    outcomes = [
        f.outcome(outcome_id=f"O-{i}", **change) for i, (change, _) in enumerate(BAD_OUTCOMES)
    ]
    raw = {
        t: from_frame(f.frame(t, rows), CONTRACTS[t])
        for t, rows in (
            ("shipments", ships),
            ("items", items),
            ("travellers", travellers),
            ("outcomes", outcomes),
        )
    }
    result = validate_tables(raw)
    outcomes_gx = run_suites({t: r.view for t, r in result.tables.items()})

    gx_failures: Counter[tuple[str, str]] = Counter()
    for o in outcomes_gx:
        gx_failures[(o.table, o.rule)] += o.unexpected_count
    # Own-rule violations found by the Polars rules, per (table, rule).
    polars_failures: Counter[tuple[str, str]] = Counter()
    for name, table in result.tables.items():
        for rules in table.quarantine["_rules"].to_list():
            for rule in rules:
                if not rule.startswith(("parent_rejected", "child_rejected")):
                    polars_failures[(name, rule)] += 1

    expected_rules = {
        (t, r)
        for t, lst in (
            ("shipments", BAD_SHIPMENTS),
            ("items", BAD_ITEMS),
            ("travellers", BAD_TRAVELLERS),
            ("outcomes", BAD_OUTCOMES),
        )
        for _, r in lst
        if r not in NO_GX_TWIN
    }
    for key in expected_rules:
        assert gx_failures[key] >= 1, f"GX missed {key}"
    for key, n in polars_failures.items():
        if key[1] in NO_GX_TWIN or key[1] == "required:consignee_name":
            continue  # a blank name counts twice in GX (null and blank expectations)
        assert gx_failures[key] == n, (key, gx_failures[key], n)
    page = write_report(outcomes_gx, result.summary(), tmp_path)
    text = page.read_text()
    assert "vague_description:description" in text and "fail" in text


def test_chunked_runs_add_up_to_the_same_counts() -> None:
    ships = [
        f.shipment(shipment_id=f"S-{i}", origin_country="UK" if i % 4 == 0 else "CN")
        for i in range(10)
    ]
    ships.append(f.shipment(shipment_id="S-3"))  # a duplicate across chunks
    raw = {"shipments": from_frame(f.frame("shipments", ships), CONTRACTS["shipments"])}
    views = {t: r.view for t, r in validate_tables(raw).tables.items() if t == "shipments"}
    whole = {(o.rule, o.expectation): o for o in run_suites(views)}
    chunks = {(o.rule, o.expectation): o for o in run_suites(views, chunk_rows=3)}
    assert whole.keys() == chunks.keys()
    for key, o in whole.items():
        assert chunks[key].unexpected_count == o.unexpected_count, key
        assert chunks[key].element_count == o.element_count, key
    assert whole[("country:origin_country", "ExpectColumnValuesToBeInSet")].unexpected_count == 3
    assert whole[("unique:shipment_id", "ExpectColumnValuesToBeUnique")].unexpected_count == 2
