"""A goods line whose HS heading has no tariff text is not scored as arms (UAT2 DS F1).

`description_arms_margin` was null both for shipments declared wholly under
chapter 93 (arms declared as arms: risky in training) and for shipments whose
headings have no text in the tariff table; a model trained on the first read the
second as arms (frozen fish 17 times riskier than apples). The tester's
comparison on a model trained here: identical shipments that differ only in
their goods line, a heading without tariff text against a similar one with.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pytest

from data_contracts.settings import DataLayout
from features.build import CONTEXT, build_features
from features.context import History
from models.dataset import Target, labelled, matrix, time_split
from models.explain import contributions, reasons
from models.train import TrainConfig, Trained, fit, predict
from pipelines.features import load_history
from pipelines.generate import run_generate
from pipelines.synthetic import WorldConfig
from pipelines.validate import run_validate

TEXT_FEATURES = ("description_arms_margin", "description_hs_similarity")
# (shipment, description, HS code): without tariff text (7304, 0304), then with (7306, 0808)
LINES = (
    ("NOTEXT-TUBES", "stainless steel seamless tubes for boilers", "730441"),
    ("TEXT-TUBES", "stainless steel welded tubes for boilers", "730640"),
    ("NOTEXT-FISH", "frozen fish fillets of trout", "030489"),
    ("TEXT-APPLES", "fresh apples golden delicious", "080810"),
)
PAIRS = (("NOTEXT-TUBES", "TEXT-TUBES"), ("NOTEXT-FISH", "TEXT-APPLES"))


@dataclass(frozen=True)
class Scored:
    probability: dict[str, float]
    contribution: dict[str, dict[str, float]]  # shipment -> feature -> log-odds
    features: pl.DataFrame
    reasons: dict[str, list[str]]  # shipment -> features of its reasons


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> History:
    layout = DataLayout(tmp_path_factory.mktemp("missing-text-world"))
    run_generate(layout, WorldConfig(n_shipments=50_000, seed=7))
    run_validate(layout, gx=False)
    return load_history(layout)


@pytest.fixture(scope="module")
def trained(world: History) -> Trained:
    features = build_features(world.shipments, world.items, world)
    return fit(time_split(labelled(features, world.outcomes, Target.ARMS)), TrainConfig())


def _shipments(world: History) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The tester's shipments: the same parties, value, mass and route, after the
    history ends; one goods line each (LINES)."""
    template = world.shipments.tail(1)
    at = template["declared_at"][0] + dt.timedelta(days=3)
    ships = pl.concat(
        [
            template.with_columns(
                pl.lit(sid).alias("shipment_id"),
                pl.lit(f"REF-{sid}").alias("declaration_ref"),
                pl.lit(at, template.schema["declared_at"]).alias("declared_at"),
                pl.lit(at + dt.timedelta(days=2), template.schema["expected_arrival_at"]).alias(
                    "expected_arrival_at"
                ),
                pl.lit("KZ-KORDAY").alias("office_code"),
                pl.lit("TR").alias("origin_country"),
                pl.lit("KG").alias("dispatch_country"),
                pl.lit("KZ").alias("destination_country"),
                pl.lit("TR99887766").alias("consignor_id"),
                pl.lit("Ozgur Dis Ticaret Ltd").alias("consignor_name"),
                pl.lit("TR").alias("consignor_country"),
                pl.lit("99000000001").alias("consignee_id"),
                pl.lit('TOO "Nova Hunt"').alias("consignee_name"),
                pl.lit("KZ").alias("consignee_country"),
                pl.lit(420.5).alias("gross_mass_kg"),
                pl.lit(12, pl.Int64).alias("package_count"),
                pl.lit(18_000.0).alias("invoice_amount"),
                pl.lit("USD").alias("invoice_currency"),
            )
            for sid, _, _ in LINES
        ]
    )
    items = pl.DataFrame(
        [
            {
                "item_id": f"{sid}-1",
                "shipment_id": sid,
                "line_no": 1,
                "hs_code": code,
                "description": text,
                "quantity": 40.0,
                "quantity_unit": "PCE",
                "net_mass_kg": 380.0,
                "value": 18_000.0,
                "origin_country": "TR",
            }
            for sid, text, code in LINES
        ],
        schema=world.items.schema,
    )
    return ships, items


@pytest.fixture(scope="module")
def scored(world: History, trained: Trained) -> Scored:
    ships, items = _shipments(world)
    feats = build_features(ships, items, world)
    names = trained.feature_names
    x = matrix(feats, names)
    prob = predict(trained.booster, x)
    contrib = contributions(trained.booster, x)
    context = feats.select(list(CONTEXT)).to_dicts()
    ids = feats["shipment_id"].to_list()
    return Scored(
        {sid: float(p) for sid, p in zip(ids, prob, strict=True)},
        {
            sid: {f: float(contrib[i, names.index(f)]) for f in TEXT_FEATURES}
            for i, sid in enumerate(ids)
        },
        feats,
        {
            sid: [r.feature for r in reasons(contrib[i], names, x[i], context[i])]
            for i, sid in enumerate(ids)
        },
    )


def test_the_shipments_differ_in_whether_their_heading_has_tariff_text(scored: Scored) -> None:
    rows = {r["shipment_id"]: r for r in scored.features.to_dicts()}
    for no_text, text in PAIRS:
        assert rows[no_text]["hs_text_line"] is None and rows[no_text]["arms_fit_line"] is None
        assert rows[text]["hs_text_line"] is not None and rows[text]["arms_fit_line"] is not None


def test_no_tariff_text_does_not_push_the_score_up(scored: Scored) -> None:
    for no_text, text in PAIRS:
        for name in TEXT_FEATURES:
            # what a missing text contributes: at most what a compared description does
            assert scored.contribution[no_text][name] <= scored.contribution[text][name] + 1e-9, (
                no_text,
                name,
                scored.contribution,
            )
        # (before the fix: 14x and 9x, through description_arms_margin)
        assert scored.probability[no_text] <= 1.5 * scored.probability[text], scored.probability
        assert not set(TEXT_FEATURES) & set(scored.reasons[no_text]), scored.reasons[no_text]
