"""Turn shipment and line plans into the raw tables of the contracts: names in
their variants, currencies, transit lists, references, carriers, containers."""

from __future__ import annotations

import numpy as np
import polars as pl

from data_contracts.schemas import ITEMS, SHIPMENTS
from pipelines.synthetic import catalog as cat
from pipelines.synthetic.lawful import arrival_offset
from pipelines.synthetic.parties import N_VARIANTS, PartyBook
from pipelines.synthetic.timeline import ser, strs

OFFICE_CODE = np.array([o.code for o in cat.OFFICES])
OFFICE_COUNTRY = np.array([o.country for o in cat.OFFICES])
OFFICE_NUMBER = np.array([o.number for o in cat.OFFICES])
UTC = pl.Datetime("us", "UTC")


def _transit_table() -> pl.DataFrame:
    rows = [
        {"dispatch": a, "destination": b, "base_transit": list(v)}
        for (a, b), v in cat.SURFACE_TRANSIT.items()
    ]
    return pl.DataFrame(
        rows,
        schema={
            "dispatch": pl.String,
            "destination": pl.String,
            "base_transit": pl.List(pl.String),
        },
    )


def _choice(rng: np.random.Generator, options: tuple[str, ...], n: int) -> np.ndarray:
    return np.asarray(options, dtype=object)[rng.integers(0, len(options), n)]


ROLES: dict[str, tuple[float, float]] = {
    # role: (share without phone, share without address)
    "consignor": (0.35, 0.15),
    "consignee": (0.15, 0.05),
    "declarant": (0.3, 0.3),
}


# Shares of a natural person's mentions without a date of birth, with the
# passport's number, with the ID card's number (the rest: no document).
NO_BIRTH_DATE = 0.2
PASSPORT_SHARE = 0.5
ID_CARD_SHARE = 0.25


def role_columns(
    rng: np.random.Generator,
    parties: pl.DataFrame,
    names: np.ndarray,
    idx: np.ndarray,
    role: str,
) -> dict[str, pl.Series]:
    """The raw columns of one role (name variant, ids, contacts) for parties `idx`."""
    n = len(idx)
    null_phone, null_addr = ROLES[role]
    primary = parties["primary"].to_numpy()
    v = np.where(rng.random(n) < 0.78, primary[idx], rng.integers(0, N_VARIANTS, n))
    p = parties[idx]
    cols: dict[str, pl.Series] = {
        f"{role}_id": p["tax_id"],
        f"{role}_name": ser(names[idx * N_VARIANTS + v], dtype=pl.String),
        f"{role}_address": p["address"].set(ser(rng.random(n) < null_addr), None),
        f"{role}_phone": p["phone"].set(ser(rng.random(n) < null_phone), None),
        f"{role}_email": p["email"].set(ser(rng.random(n) < 0.3), None),
    }
    # A natural person (sole trader, private importer) is identified on the
    # declaration by date of birth and an identity document: the passport, or
    # the national ID card, not always filled in.
    u = rng.random(n)
    cols[f"{role}_birth_date"] = p["dob"].set(ser(rng.random(n) < NO_BIRTH_DATE), None)
    cols[f"{role}_document_number"] = pl.select(
        pl.when(pl.lit(ser(u < PASSPORT_SHARE)))
        .then(pl.lit(p["passport"]))
        .when(pl.lit(ser(u < PASSPORT_SHARE + ID_CARD_SHARE)))
        .then(pl.lit(p["id_card"]))
        .alias("d")
    )["d"]
    if role != "declarant":
        cols[f"{role}_country"] = p["country"].set(ser(rng.random(n) < 0.04), None)
    return cols


def render_shipments(
    rng: np.random.Generator, plan: pl.DataFrame, book: PartyBook
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`plan` must already be sorted in final order with a `shipment_id` column.
    Returns the raw shipments and the parties truth."""
    n = plan.height
    parties = book.frame()
    names = book.name_table()
    cols: dict[str, pl.Series] = {}
    truth = []
    for role in ROLES:
        idx = plan[role].to_numpy()
        cols.update(role_columns(rng, parties, names, idx, role))
        p = parties[idx]
        truth.append(
            pl.DataFrame(
                {
                    "shipment_id": plan["shipment_id"],
                    "role": np.full(n, role),
                    "party_key": p["party_key"],
                }
            )
        )
    mode = plan["mode"].to_numpy().astype(str)
    office = plan["office"].to_numpy()
    ts = plan["ts"].to_numpy()
    arrival = ts + arrival_offset(rng, mode)
    # Transit: usual corridor for surface modes, plus odd detours; a network that
    # keeps the listed high-risk countries out of its route takes the corridor
    # around them (catalog.DISPLACED_TRANSIT).
    frame = plan.select(
        "dispatch", "destination", "mode", "odd_transit", "displaced"
    ).with_row_index("_r")
    frame = frame.join(_transit_table(), on=["dispatch", "destination"], how="left")
    frame = frame.sort("_r")
    surface = pl.col("mode").is_in(["road", "rail", "sea"])
    base = pl.col("base_transit").fill_null(pl.lit([], dtype=pl.List(pl.String)))
    rerouted = base.list.eval(pl.element().replace(cat.DISPLACED_TRANSIT)).list.unique(
        maintain_order=True
    )
    transit = frame.select(
        pl.when(surface & pl.col("displaced"))
        .then(rerouted)
        .when(surface)
        .then(base)
        .otherwise(pl.lit([], dtype=pl.List(pl.String)))
        .list.concat(
            pl.when(pl.col("odd_transit").is_not_null())
            .then(pl.concat_list(pl.col("odd_transit")))
            .otherwise(pl.lit([], dtype=pl.List(pl.String)))
        )
        .alias("t")
    )["t"]
    transit_df = pl.select(pl.when(transit.list.len() > 0).then(transit).otherwise(None))
    transit_s = transit_df.to_series().alias("transit_countries")
    # Carriers and conveyances.
    carrier = np.empty(n, dtype=object)
    for m, opts in cat.CARRIERS.items():
        sel = mode == m
        carrier[sel] = _choice(rng, opts, int(sel.sum()))
    carrier[rng.random(n) < 0.05] = None
    d = rng.integers(0, 10**8, n)

    def digits(values: np.ndarray, width: int) -> pl.Expr:
        return pl.lit(ser(values)).cast(pl.String).str.zfill(width)

    is_mode = {m: pl.lit(ser(mode == m)) for m in ("road", "rail", "air", "express", "post")}
    refs = pl.select(
        conv=pl.when(is_mode["road"])
        .then(
            digits(d % 1000, 3)
            + " "
            + pl.lit(strs(_choice(rng, ("ABC", "KZA", "AMX", "TRK", "BCA", "HHT", "LXE"), n)))
            + " "
            + digits(d % 17 + 1, 2)
        )
        .when(is_mode["rail"])
        .then(digits(d, 8))
        .when(is_mode["air"])
        .then(
            pl.lit(strs(_choice(rng, cat.AIR_CARRIER_CODES, n))) + " " + digits(d % 9000 + 100, 1)
        )
        .when(is_mode["express"])
        .then("AWB" + digits(d, 10))
        .otherwise(None),
        cont=pl.when(is_mode["rail"])
        .then(pl.concat_list("TGHU" + digits(d % 10**7, 7)))
        .when(is_mode["road"] & pl.lit(ser(rng.random(n) < 0.5)))
        .then(pl.concat_list("TR-" + digits(d % 10**6, 6)))
        .otherwise(None),
        seals=pl.when(pl.lit(ser(np.isin(mode, ["rail", "road", "sea"]) & (rng.random(n) < 0.8))))
        .then(pl.concat_list(pl.lit(strs(OFFICE_COUNTRY[office])) + digits((d * 7) % 10**7, 7)))
        .otherwise(None),
        decl=pl.when(is_mode["post"])
        .then(
            "R"
            + pl.lit(strs(np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))[d % 26]))
            + digits(d % 10**9, 9)
            + pl.lit(plan["origin"])
        )
        .otherwise(
            pl.lit(strs(OFFICE_NUMBER[office]))
            + "/"
            + pl.lit(ser(ts)).cast(UTC).dt.strftime("%d%m%y")
            + "/"
            + digits((d * 13) % 10**7, 7)
        ),
    )
    conv_s = refs["conv"].set(ser(rng.random(n) < 0.05), None)
    cont = refs["cont"]
    seals = refs["seals"]
    decl_ref = refs["decl"]
    out = pl.DataFrame(
        {
            "shipment_id": plan["shipment_id"],
            "declaration_ref": decl_ref,
            "declared_at": ser(ts).cast(UTC),
            "expected_arrival_at": ser(arrival).cast(UTC),
            "mode": ser(mode, dtype=pl.String),
            "office_code": ser(OFFICE_CODE[office], dtype=pl.String),
            "carrier_name": ser(carrier, dtype=pl.String),
            "conveyance_ref": conv_s,
            "origin_country": plan["origin"],
            "dispatch_country": plan["dispatch"],
            "transit_countries": transit_s,
            "destination_country": plan["destination"],
            **{k: v.alias(k) for k, v in cols.items()},
            "gross_mass_kg": plan["gross"],
            "package_count": plan["packages"],
            "invoice_amount": plan["invoice"],
            "invoice_currency": plan["currency"],
            "container_ids": cont,
            "seal_ids": seals,
        }
    )
    out = out.select([pl.col(c).cast(t) for c, t in SHIPMENTS.raw_schema.items()])
    return out, pl.concat(truth)


def render_items(items: pl.DataFrame) -> pl.DataFrame:
    """`items` sorted with shipment_id, line_no, value (in currency)."""
    out = items.with_columns(
        (pl.col("shipment_id") + "-" + pl.col("line_no").cast(pl.String)).alias("item_id")
    )
    return out.select([pl.col(c).cast(t) for c, t in ITEMS.raw_schema.items()])
