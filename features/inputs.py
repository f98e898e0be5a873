"""Which inputs each feature needs, so that a data set without them (an
administration's own export, say) leaves the feature out instead of feeding the
model a value made up from nothing (a count of 0 shared phones where no phone
was ever declared).

An input is "table.column", or "table" for a whole input (travellers, the
watchlist); "a|b" means any one of them is enough.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from features.registry import specs

_CONTACTS = (
    "shipments.consignee_phone|shipments.consignee_address|shipments.consignee_email"
    "|shipments.consignor_phone|shipments.consignor_address|shipments.consignor_email"
)

NEEDS: dict[str, tuple[str, ...]] = {
    "lead_time_hours": ("shipments.expected_arrival_at",),
    "mass_per_package": ("shipments.package_count",),
    "transit_count": ("shipments.transit_countries",),
    "transit_off_route": ("shipments.transit_countries",),
    "high_risk_transit": ("shipments.transit_countries",),
    "dispatch_country_code": ("shipments.dispatch_country",),
    "consignee_phone_shared": ("shipments.consignee_phone",),
    "consignee_address_shared": ("shipments.consignee_address",),
    "network_component_parties": (_CONTACTS,),
    "network_contact_parties": (_CONTACTS,),
    "network_hops_to_arms": (_CONTACTS, "outcomes"),
}
_PREFIX_NEEDS = {
    "consignor_": ("shipments.consignor_name",),
    "declarant_": ("shipments.declarant_name",),
    "traveller_": ("travellers",),
    "watchlist_": ("watchlist",),
}


def needs(feature: str) -> tuple[str, ...]:
    for prefix, inputs in _PREFIX_NEEDS.items():
        if feature.startswith(prefix):
            return inputs + NEEDS.get(feature, ())
    return NEEDS.get(feature, ())


def unavailable(absent: Mapping[str, list[str]], missing_inputs: set[str]) -> dict[str, str]:
    """Features whose inputs the data set lacks, with the missing input named.

    `absent`: per table, the columns the data does not have; `missing_inputs`:
    whole inputs with no rows (e.g. {"travellers", "watchlist"}).
    """

    def have(item: str) -> bool:
        if "." not in item:
            return item not in missing_inputs
        table, column = item.split(".", 1)
        return table not in missing_inputs and column not in absent.get(table, [])

    out: dict[str, str] = {}
    for spec in specs():
        for requirement in needs(spec.name):
            if not any(have(alt) for alt in requirement.split("|")):
                out[spec.name] = requirement
                break
    return out


# The export's own columns a model was trained with (`extra_*`: numeric names and
# the code tables of the categorical ones, as feature_set.json records them), kept
# with the model version: its tag `extras` (JSON) and the run's artifact extras.json
# (the tag is left out when the tables are too long for a tag).
EXTRAS_TAG = "extras"
EXTRAS_ARTIFACT = "extras.json"
_MAX_TAG = 90_000  # MLflow keeps model version tags up to 100,000 characters


def model_extras_tag(extras: Mapping[str, Any] | None) -> dict[str, str]:
    """The model version tag recording `extras` (none when there are none)."""
    record = normal_extras(extras)
    if not record["numeric"] and not record["categorical"]:
        return {}
    text = json.dumps(record, ensure_ascii=False, sort_keys=True)
    return {EXTRAS_TAG: text} if len(text) <= _MAX_TAG else {EXTRAS_TAG: "artifact"}


def model_extras(
    tags: Mapping[str, str], artifact: Callable[[str], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The extras a model version was trained with, from its tags (or, for long code
    tables, its run's artifact, read by `artifact(path)`); empty without extras."""
    text = tags.get(EXTRAS_TAG)
    if not text:
        return normal_extras(None)
    if text == "artifact":
        if artifact is None:
            return normal_extras(None)
        return normal_extras(artifact(EXTRAS_ARTIFACT))
    return normal_extras(json.loads(text))


def normal_extras(extras: Mapping[str, Any] | None) -> dict[str, Any]:
    """{"numeric": [names], "categorical": {name: [values]}} of an extras record."""
    extras = extras or {}
    return {
        "numeric": [str(n) for n in extras.get("numeric") or ()],
        "categorical": {
            str(k): [str(v) for v in vs] for k, vs in (extras.get("categorical") or {}).items()
        },
    }
