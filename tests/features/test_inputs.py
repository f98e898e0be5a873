"""Features that need inputs a data set lacks are left out, naming the input."""

from __future__ import annotations

from features.inputs import unavailable
from features.registry import feature_names


def test_nothing_is_left_out_when_everything_is_there() -> None:
    assert unavailable({}, set()) == {}


def test_missing_columns_and_inputs_leave_out_exactly_their_features() -> None:
    out = unavailable(
        {"shipments": ["expected_arrival_at", "consignee_phone"]}, {"travellers", "watchlist"}
    )
    assert out["lead_time_hours"] == "shipments.expected_arrival_at"
    assert out["consignee_phone_shared"] == "shipments.consignee_phone"
    assert all(out[n] == "travellers" for n in feature_names() if n.startswith("traveller_"))
    assert all(out[n] == "watchlist" for n in feature_names() if n.startswith("watchlist_"))
    # One contact column is enough for the network; goods and consignee history stay.
    assert "network_component_parties" not in out
    for kept in ("min_unit_value_z", "consignee_shipments_30d", "hs_chapter_risk"):
        assert kept not in out


def test_an_export_without_any_contact_loses_the_network() -> None:
    contacts = [
        f"{r}_{c}" for r in ("consignee", "consignor") for c in ("phone", "address", "email")
    ]
    out = unavailable({"shipments": contacts}, set())
    assert {
        "network_component_parties",
        "network_contact_parties",
        "network_hops_to_arms",
    } <= out.keys()
