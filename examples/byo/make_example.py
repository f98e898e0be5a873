"""Writes declarations.csv: a small example of an administration's own export
(line-level, its own column names and codes, an inspection result on every
declaration), made from Caravan's synthetic world so that it is realistic.

    .venv/bin/python examples/byo/make_example.py
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipelines.synthetic import WorldConfig, generate_world

MODES = {"road": "30", "rail": "20", "air": "40", "post": "50", "express": "51", "sea": "10"}


def main(path: Path | None = None) -> None:
    """Write the example to `path` (default: declarations.csv beside this script)."""
    world = generate_world(WorldConfig(n_shipments=1500, seed=99, broken_share=0.0))
    ships = world.shipments.join(world.truth, on="shipment_id")
    # Every declaration was inspected here: a finding where there was trafficking,
    # missed one time in five (a fixed pattern, so the file is reproducible).
    ships = ships.with_row_index("n").with_columns(
        pl.when(pl.col("is_trafficking") & (pl.col("n") % 5 != 0))
        .then(pl.lit("SEIZURE"))
        .otherwise(pl.lit("NO_VIOLATION"))
        .alias("RESULT")
    )
    lines = world.items.join(ships, on="shipment_id", suffix="_ship")
    out = lines.select(
        pl.col("shipment_id").str.replace("SH", "D").alias("DECL_ID"),
        pl.col("declaration_ref").alias("DECL_NO"),
        pl.col("declared_at").dt.strftime("%d.%m.%Y %H:%M").alias("DECL_DATE"),
        pl.col("office_code").alias("POST"),
        pl.col("mode").replace_strict(MODES, default="99").alias("TRANSPORT"),
        pl.col("origin_country_ship").alias("ORIGIN"),
        pl.col("dispatch_country").alias("DISPATCH"),
        pl.col("destination_country").alias("DEST"),
        pl.col("consignee_id").fill_null("000000000").alias("IMPORTER_INN"),
        pl.col("consignor_name").alias("EXPORTER"),
        pl.col("declarant_id").fill_null("000000000").alias("BROKER_INN"),
        pl.col("gross_mass_kg").round(1).alias("GROSS_KG"),
        pl.col("invoice_amount").round(2).alias("INVOICE_VALUE"),
        pl.col("invoice_currency").alias("CURRENCY"),
        pl.col("line_no").alias("LINE_NO"),
        pl.col("hs_code").alias("HS_CODE"),
        pl.col("description").alias("GOODS_DESC"),
        pl.col("quantity").round(2).alias("QTY"),
        pl.col("quantity_unit").alias("UNIT"),
        pl.col("net_mass_kg").round(2).alias("NET_KG"),
        pl.col("value").round(2).alias("LINE_VALUE"),
        pl.col("origin_country").alias("LINE_ORIGIN"),
        pl.when(pl.col("n") % 7 == 0).then(pl.lit("51")).otherwise(pl.lit("40")).alias("REGIME"),
        (pl.col("invoice_amount") * 0.1).round(2).alias("DUTY_PAID"),
        pl.col("RESULT"),
        (pl.col("declared_at") + pl.duration(hours=30))
        .dt.strftime("%d.%m.%Y %H:%M")
        .alias("INSPECTION_DATE"),
    )
    path = path or Path(__file__).with_name("declarations.csv")
    out.write_csv(path, separator=";")
    print(f"{out.height} lines of {out['DECL_ID'].n_unique()} declarations written to {path}")


if __name__ == "__main__":
    main()
