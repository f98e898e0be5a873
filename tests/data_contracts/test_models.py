"""The strict pydantic models generated from the same definitions as the Polars schemas."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from data_contracts.schemas import CONTRACTS, ITEMS, OUTCOMES, SHIPMENTS
from tests import factories as f


def test_models_and_polars_schemas_have_the_same_columns() -> None:
    for contract in CONTRACTS.values():
        model = contract.pydantic_model()
        assert list(model.model_fields) == list(contract.polars_schema.names())
        required = {n for n, fi in model.model_fields.items() if fi.is_required()}
        assert required == set(contract.required_columns)


def test_good_rows_are_valid() -> None:
    SHIPMENTS.pydantic_model().model_validate(f.shipment())
    ITEMS.pydantic_model().model_validate(f.item())
    OUTCOMES.pydantic_model().model_validate(f.outcome())


def _error_fields(exc: ValidationError) -> set[str]:
    return {str(e["loc"][0]) for e in exc.errors()}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", False),  # lax parsing once turned false into a number
        ("quantity", "10"),
        ("line_no", 1.5),
        ("hs_code", 8467290000),
        ("hs_code", "770000"),
        ("origin_country", "UK"),
        ("quantity_unit", "BOX"),
        ("value", -1.0),
    ],
)
def test_strict_item_model_names_the_bad_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        ITEMS.pydantic_model().model_validate(f.item(**{field: value}))
    assert _error_fields(info.value) == {field}


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        ITEMS.pydantic_model().model_validate({**f.item(), "colour": "red"})
    assert _error_fields(info.value) == {"colour"}


def test_json_dates_are_parsed_but_nothing_else_is_coerced() -> None:
    model = SHIPMENTS.pydantic_model()
    payload = {
        **f.shipment(),
        "declared_at": "2024-03-15T09:30:00Z",
        "expected_arrival_at": "2024-03-16T14:00:00Z",
    }
    record = model.model_validate(payload)
    assert record.declared_at == dt.datetime(2024, 3, 15, 9, 30, tzinfo=dt.UTC)  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        model.model_validate({**payload, "package_count": "40"})
    with pytest.raises(ValidationError):
        model.model_validate({**payload, "currency": "RUR"})
