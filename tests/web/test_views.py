"""Pure logic behind the pages: form checks, rule errors placed beside fields, the
waterfall chart, queue filtering and sorting."""

from __future__ import annotations

import re

import pytest

from serving.web.i18n import Translator
from serving.web.views import (
    QueueRow,
    Step,
    WatchlistHit,
    Waterfall,
    capacity_used,
    check_outcome,
    check_waiver,
    driver_texts,
    filter_sort,
    rule_data,
    rule_errors,
    waterfall_svg,
)

T = Translator("en")


def test_outcome_form_checks() -> None:
    ok, errors = check_outcome(
        {"finding": "yes", "category": "parts", "quantity": "3,5", "unit": "KGM", "notes": "x"}, T
    )
    assert not errors and ok is not None
    assert (ok.finding, ok.category, ok.quantity, ok.unit) == (True, "parts", 3.5, "KGM")
    ok, errors = check_outcome({"finding": "no"}, T)
    assert ok is not None and ok.category is None and ok.quantity is None
    bad, errors = check_outcome({}, T)
    assert bad is None and set(errors.fields) == {"finding"}
    bad, errors = check_outcome({"finding": "no", "category": "firearms", "quantity": "1"}, T)
    assert bad is None
    assert errors.fields["category"] == "A category is given only when something was found."
    assert errors.fields["quantity"] == "A quantity seized needs a finding."
    bad, errors = check_outcome({"finding": "yes", "category": "toys", "quantity": "nan"}, T)
    assert set(errors.fields) == {"category", "quantity"}
    bad, errors = check_outcome({"finding": "yes", "category": "parts", "quantity": "2"}, T)
    assert errors.fields == {"unit": "A quantity needs a unit."}
    bad, errors = check_outcome({"finding": "no", "notes": "a\x00b"}, T)
    assert "notes" in errors.fields


def test_waiver_needs_a_reason() -> None:
    assert check_waiver({"reason": "  seal intact "}, T) == (
        "seal intact",
        check_waiver({"reason": "x"}, T)[1],
    )
    for form in ({}, {"reason": ""}, {"reason": " \n "}):
        reason, errors = check_waiver(form, T)
        assert reason is None and errors.fields == {"reason": "A waiver needs a reason."}
    reason, errors = check_waiver({"reason": "x" * 2001}, T)
    assert reason is None and "2000" in errors.fields["reason"]


def test_rule_form_and_errors_beside_their_fields() -> None:
    data, errors = rule_data(
        {
            "name": " Gun parts ",
            "severity": "high",
            "condition": "any: [{field: mode, op: eq, value: post}]",
        },
        T,
    )
    assert not errors and data is not None
    assert data["name"] == "Gun parts"
    assert data["condition"] == {"any": [{"field": "mode", "op": "eq", "value": "post"}]}
    data, errors = rule_data({"name": "x", "severity": "high", "condition": "all: [ {a: b\n"}, T)
    assert data is None and "line" in errors.fields["condition"]
    data, errors = rule_data({"name": "x", "severity": "high", "condition": "- just a list"}, T)
    assert data is None and "mapping" in errors.fields["condition"]
    placed = rule_errors(
        [
            ("condition.all[0].field", "unknown field 'nope'"),
            ("condition.all[1].op", "unknown operator"),
            ("name", "too short"),
            ("effective_to", "before effective_from"),
            ("rule", "a rule must be a mapping"),
        ],
        T,
    )
    assert placed.fields["name"] == "too short"
    assert placed.fields["effective_to"] == "before effective_from"
    assert "condition.all[0].field" in placed.fields["condition"]
    assert "condition.all[1].op" in placed.fields["condition"]
    assert placed.general == ["rule: a rule must be a mapping"]


def test_waterfall_bars_add_up_and_texts_are_escaped() -> None:
    w = Waterfall(
        -2.0, -0.5, [Step("<script>alert(1)</script>", 1.0), Step("lowers", -0.25), Step("x", 0.75)]
    )
    svg = str(waterfall_svg(w, T))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert len(re.findall(r"<rect ", svg)) == 3
    assert svg.count('fill="#c0392b"') == 2 and svg.count('fill="#2166ac"') == 1
    assert "p=0.119" in svg  # sigmoid(-2)
    assert "p=0.378" in svg  # sigmoid(-0.5)
    assert "+1.000" in svg and "-0.250" in svg


def _row(rank: int, lane: str, status: str, method: str, priority: float, age: float) -> QueueRow:
    ref = {
        "rank": rank,
        "lane": lane,
        "status": status,
        "selection_method": method,
        "priority": priority,
        "age_seconds": age,
    }
    return QueueRow(ref, [], False, "", "", "")


@pytest.mark.parametrize(
    ("lane", "status", "exploration", "sort", "ranks"),
    [
        # default: the forced entry (priority 2.0: must-inspect or exact watchlist hit)
        # first, then the rest by rank (sup S15)
        ("all", "all", False, "rank", [3, 1, 2, 4]),
        ("red", "all", False, "rank", [3, 1]),
        ("all", "open", False, "rank", [1, 2, 4]),
        ("all", "all", True, "rank", [4]),
        ("all", "all", False, "priority", [3, 1, 2, 4]),
        ("all", "all", False, "age", [4, 2, 1, 3]),
    ],
)
def test_queue_filter_and_sort(
    lane: str, status: str, exploration: bool, sort: str, ranks: list[int]
) -> None:
    rows = [
        _row(2, "yellow", "open", "model", 0.5, 50),
        _row(1, "red", "open", "rule", 0.9, 10),
        _row(4, "green", "open", "random", 0.1, 99),
        _row(3, "red", "claimed", "model", 2.0, 5),
    ]
    assert [r.ref["rank"] for r in filter_sort(rows, lane, status, exploration, sort)] == ranks


def test_a_near_miss_is_marked_and_does_not_drive_the_priority() -> None:
    """Below the alert threshold (85) a watchlist match is flagged as a near miss on
    the shipment page and is not listed among what drove the priority."""
    ru = Translator("ru")
    assert driver_texts([], 80.0, False, T) == []
    assert driver_texts([], 85.0, False, T) == [
        "A party's name resembles a watchlist entry (85% similar)"
    ]
    assert driver_texts([], 100.0, True, ru) == [ru("reason.watchlist_exact")]
    assert WatchlistHit("consignee", 80.0, False, None).near
    assert not WatchlistHit("consignee", 85.0, False, None).near
    assert not WatchlistHit("consignee", 100.0, True, None).near
    assert "85%" in T("ship.watchlist_near", threshold="85")


def test_the_capacity_line_adds_up() -> None:
    """decided + claimed + open = used; a displaced entry (closed without decision)
    takes no slot and is never counted as a forced entry over capacity (supervisor
    round 2, S5)."""

    def entry(status: str, over: bool = False, decided: bool = False) -> dict[str, object]:
        return {"status": status, "over_capacity": over, "decided_at": "x" if decided else None}

    outs = [
        entry("inspected", decided=True),
        entry("waived", decided=True),
        entry("closed", decided=True),
        entry("claimed"),
        entry("open"),
        entry("closed"),  # displaced (by a red arrival)
        entry("closed", over=True),  # displaced, flagged by older code
        entry("open", over=True),  # a must-inspect entry beyond the capacity
    ]
    used = capacity_used(outs, 5)
    assert used == {"used": 5, "capacity": 5, "decided": 3, "claimed": 1, "open": 1, "over": 1}
    assert used["decided"] + used["claimed"] + used["open"] == used["used"]


def test_a_contact_link_is_not_called_a_phone() -> None:
    """The link kind 'phone' stands for a shared phone or e-mail: a traveller linked
    by e-mail only was shown as 'same phone' (security review round 2, F15)."""
    assert T.link("phone") == "same phone or e-mail"
    assert Translator("ru").link("phone") == "тот же телефон или e-mail"
