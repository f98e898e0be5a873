"""Hand-made valid rows of every input (the good twins of the contract tests)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from data_contracts.schemas import CONTRACTS

UTC = dt.UTC


def shipment(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "shipment_id": "S-0001",
        "declaration_ref": "10206010/150324/0001234",
        "declared_at": dt.datetime(2024, 3, 15, 9, 30, tzinfo=UTC),
        "expected_arrival_at": dt.datetime(2024, 3, 16, 14, 0, tzinfo=UTC),
        "mode": "road",
        "office_code": "KZ-KHORGOS",
        "carrier_name": "Silk Way Logistics LLP",
        "conveyance_ref": "777ABC02",
        "origin_country": "CN",
        "dispatch_country": "CN",
        "transit_countries": [],
        "destination_country": "KZ",
        "consignor_id": "91650000MA77X1234K",
        "consignor_name": "Urumqi Tianshan Machinery Co., Ltd.",
        "consignor_address": "88 Hetan North Road, Urumqi, Xinjiang",
        "consignor_phone": "+86 991 555 0101",
        "consignor_email": "sales@tianshan-mach.cn",
        "consignor_country": "CN",
        "consignee_id": "180340012345",
        "consignee_name": "ТОО Алматы Техника",
        "consignee_address": "Almaty, Raiymbek ave 221",
        "consignee_phone": "+7 727 300 1122",
        "consignee_email": "info@almatytech.kz",
        "consignee_country": "KZ",
        "declarant_id": "990240001111",
        "declarant_name": "Broker Service LLP",
        "declarant_address": "Zharkent, Tole bi 5",
        "declarant_phone": "+7 72831 22 333",
        "declarant_email": "declare@broker.kz",
        "gross_mass_kg": 1250.0,
        "package_count": 40,
        "invoice_amount": 18400.0,
        "invoice_currency": "USD",
        "container_ids": ["TGHU1234567"],
        "seal_ids": ["CN778812"],
    }
    row.update(changes)
    return row


def item(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "item_id": "S-0001-1",
        "shipment_id": "S-0001",
        "line_no": 1,
        "hs_code": "8467290000",
        "description": "Electric angle grinders, 125 mm, with hand-held motor",
        "quantity": 200.0,
        "quantity_unit": "PCE",
        "net_mass_kg": 1100.0,
        "value": 18400.0,
        "origin_country": "CN",
    }
    row.update(changes)
    return row


def traveller(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "traveller_record_id": "T-0001",
        "pnr_locator": "X7K2LQ",
        "surname": "ABDULLAYEV",
        "given_names": "AKMAL",
        "name_native": "Абдуллаев Акмал",
        "date_of_birth": dt.date(1985, 6, 1),
        "nationality": "UZ",
        "document_type": "passport",
        "document_number": "FA1234567",
        "document_country": "UZ",
        "booked_at": dt.datetime(2024, 3, 1, 8, 0, tzinfo=UTC),
        "departure_at": dt.datetime(2024, 3, 10, 6, 15, tzinfo=UTC),
        "route": ["TAS", "IST"],
        "route_countries": ["UZ", "TR"],
        "mode": "air",
        "carrier_code": "HY",
        "one_way": False,
        "payment_form": "card",
        "travel_agency": "Samarkand Tour",
        "contact_phone": "+998 90 123 45 67",
        "contact_email": "akmal@example.uz",
        "contact_address": "Tashkent, Chilanzar 12",
        "baggage_pieces": 1,
        "baggage_kg": 20.0,
        "group_id": None,
    }
    row.update(changes)
    return row


def outcome(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "outcome_id": "O-0001",
        "shipment_id": "S-0001",
        "inspected_at": dt.datetime(2024, 3, 16, 16, 0, tzinfo=UTC),
        "officer_id": "KZ-KHORGOS-O017",
        "selection_method": "random",
        "selection_rule": None,
        "selection_probability": 0.02,
        "finding": False,
        "finding_category": None,
        "quantity_seized": None,
        "seized_unit": None,
        "notes": None,
    }
    row.update(changes)
    return row


def frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CONTRACTS[table].raw_schema)
