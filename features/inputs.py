"""Which inputs each feature needs, so that a data set without them (an
administration's own export, say) leaves the feature out instead of feeding the
model a value made up from nothing (a count of 0 shared phones where no phone
was ever declared).

An input is "table.column", or "table" for a whole input (travellers, the
watchlist); "a|b" means any one of them is enough.
"""

from __future__ import annotations

from collections.abc import Mapping

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
