"""Deliberately broken rows, one broken thing per row, each recorded with the
contract rule it breaks (the validator must quarantine exactly these)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

RULES: dict[str, tuple[str, ...]] = {
    "shipments": (
        "country:origin_country",
        "currency:invoice_currency",
        "positive:gross_mass_kg",
        "date_order:expected_arrival_at",
        "required:consignee_name",
        "unique:shipment_id",
    ),
    "items": (
        "vague_description:description",
        "hs_format:hs_code",
        "hs_chapter:hs_code",
        "positive:quantity",
        "positive:net_mass_kg",
        "positive:value",
        "parent_missing:shipment_id",
    ),
    "travellers": ("date_order:departure_at", "country:nationality"),
    "outcomes": (
        "parent_missing:shipment_id",
        "probability:selection_probability",
        "finding_category:finding_category",
    ),
}
ID_COLUMN = {
    "shipments": "shipment_id",
    "items": "item_id",
    "travellers": "traveller_record_id",
    "outcomes": "outcome_id",
}
VAGUE = (
    "parts",
    "Spare parts",
    "gift",
    "see invoice",
    "general cargo",
    "goods",
    "запчасти",
    "подарок",
    "образцы",
    "товар",
    "см. инвойс",
    "SAMPLES",
    "Consolidated cargo",
)
BAD_COUNTRIES = ("UK", "XX", "SU", "EU", "YU")
BAD_CURRENCIES = ("RUR", "SUR", "KZTT", "US$", "EURO")
BAD_HS_FORMAT = ("93051", "12-3456", "8471A0", "84.71.30", "8471 30 000")
BAD_CHAPTERS = ("77", "00", "98", "99")
UTC = pl.Datetime("us", "UTC")


def _split(rng: np.random.Generator, n: int, rules: tuple[str, ...]) -> list[str]:
    offset = int(rng.integers(0, len(rules)))
    order = rng.permutation(len(rules))
    return [rules[order[(offset + j) % len(rules)]] for j in range(n)]


def _missing_ids(rng: np.random.Generator, n: int) -> list[str]:
    return [f"SHZ{x:010d}" for x in rng.integers(0, 10**10, n)]


def _scatter(
    frame: pl.DataFrame, column: str, rows: np.ndarray, values: list[object]
) -> pl.DataFrame:
    if len(rows) == 0:
        return frame
    dtype = frame[column].dtype
    return frame.with_columns(frame[column].scatter(rows, pl.Series(values, dtype=dtype)))


def break_world(
    rng: np.random.Generator,
    tables: dict[str, pl.DataFrame],
    trafficking_ids: pl.Series,
    protected_travellers: pl.Series,
    share: float,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    total = sum(f.height for f in tables.values())
    n_total = round(share * total)
    counts = {t: round(n_total * f.height / max(total, 1)) for t, f in tables.items()}
    if n_total >= sum(len(r) for r in RULES.values()):
        # every rule at least once, so that small worlds exercise the whole validator
        counts = {t: max(c, len(RULES[t])) for t, c in counts.items()}
    records: list[tuple[str, int, str, str]] = []
    ships = tables["shipments"]
    items = tables["items"]
    outs = tables["outcomes"]
    travs = tables["travellers"]

    # ---- shipments
    lawful = ~ships["shipment_id"].is_in(trafficking_ids.implode()).to_numpy()
    n_s = min(counts["shipments"], int(lawful.sum()))
    rows = rng.choice(np.flatnonzero(lawful), n_s, replace=False) if n_s else np.array([], int)
    rules = _split(rng, n_s, RULES["shipments"])
    broken_ids = ships["shipment_id"].gather(rows) if n_s else pl.Series([], dtype=pl.String)
    by_rule = {
        r: np.array([x for x, q in zip(rows, rules, strict=True) if q == r], dtype=np.int64)
        for r in RULES["shipments"]
    }
    r = by_rule["country:origin_country"]
    ships = _scatter(
        ships, "origin_country", r, [BAD_COUNTRIES[i % len(BAD_COUNTRIES)] for i in range(len(r))]
    )
    r = by_rule["currency:invoice_currency"]
    ships = _scatter(
        ships,
        "invoice_currency",
        r,
        [BAD_CURRENCIES[i % len(BAD_CURRENCIES)] for i in range(len(r))],
    )
    r = by_rule["positive:gross_mass_kg"]
    ships = _scatter(ships, "gross_mass_kg", r, [0.0 if i % 2 else -12.5 for i in range(len(r))])
    r = by_rule["date_order:expected_arrival_at"]
    decl = ships["declared_at"].gather(r).to_list() if len(r) else []
    ships = _scatter(
        ships,
        "expected_arrival_at",
        r,
        [
            d - dt.timedelta(hours=int(h))
            for d, h in zip(decl, rng.integers(1, 72, len(r)), strict=True)
        ],
    )
    r = by_rule["required:consignee_name"]
    ships = _scatter(ships, "consignee_name", r, [None] * len(r))
    ships = ships.with_columns((pl.int_range(pl.len()) * 2).alias("_k"))
    for rule, rr in by_rule.items():
        if rule != "unique:shipment_id":
            records += [("shipments", int(x) * 2, "", rule) for x in rr]
    dup_rows = by_rule["unique:shipment_id"]
    if len(dup_rows):
        dup = ships[dup_rows].with_columns(
            (pl.col("declaration_ref") + "-R").alias("declaration_ref"),
            (pl.col("gross_mass_kg") * 1.1 + 1.0).alias("gross_mass_kg"),
            (pl.col("_k") + 1).alias("_k"),
        )
        ships = pl.concat([ships, dup]).sort("_k")
        records += [("shipments", int(x) * 2 + 1, "", "unique:shipment_id") for x in dup_rows]
    keys = ships["_k"].to_numpy()
    ships = ships.drop("_k")
    records = [
        (t, int(np.searchsorted(keys, k)), rid, rule) if t == "shipments" else (t, k, rid, rule)
        for t, k, rid, rule in records
    ]

    # ---- items
    bad_ship = pl.concat([trafficking_ids, broken_ids]).implode()
    ok = ~items["shipment_id"].is_in(bad_ship).to_numpy()
    multi = (items["shipment_id"].is_duplicated()).to_numpy()
    n_i = min(counts["items"], int(ok.sum()))
    rules = _split(rng, n_i, RULES["items"])
    pool = rng.permutation(np.flatnonzero(ok))
    pool_multi = pool[multi[pool]]
    item_ship = items["shipment_id"].to_numpy()
    orphaned: set[str] = set()
    used: set[int] = set()
    chosen: dict[str, list[int]] = {r: [] for r in RULES["items"]}
    it_multi = iter(pool_multi)
    it_any = iter(pool)
    for rule in rules:
        source = it_multi if rule == "parent_missing:shipment_id" else it_any
        for x in source:
            if int(x) in used:
                continue
            if rule == "parent_missing:shipment_id":
                if item_ship[x] in orphaned:
                    continue
                orphaned.add(str(item_ship[x]))
            if int(x) not in used:
                used.add(int(x))
                chosen[rule].append(int(x))
                break
    hs = items["hs_code"].to_numpy()
    for rule, rr_list in chosen.items():
        rr = np.array(rr_list, dtype=np.int64)
        k = len(rr)
        if rule == "vague_description:description":
            items = _scatter(items, "description", rr, [VAGUE[i % len(VAGUE)] for i in range(k)])
        elif rule == "hs_format:hs_code":
            items = _scatter(
                items, "hs_code", rr, [BAD_HS_FORMAT[i % len(BAD_HS_FORMAT)] for i in range(k)]
            )
        elif rule == "hs_chapter:hs_code":
            items = _scatter(
                items,
                "hs_code",
                rr,
                [BAD_CHAPTERS[i % 4] + str(hs[x])[2:] for i, x in enumerate(rr)],
            )
        elif rule.startswith("positive:"):
            col = rule.split(":")[1]
            items = _scatter(items, col, rr, [0.0 if i % 2 else -1.0 for i in range(k)])
        elif rule == "parent_missing:shipment_id":
            items = _scatter(items, "shipment_id", rr, _missing_ids(rng, k))  # type: ignore[arg-type]
        records += [("items", int(x), "", rule) for x in rr]

    # ---- travellers
    okt = ~travs["traveller_record_id"].is_in(protected_travellers.implode()).to_numpy()
    n_t = min(counts["travellers"], int(okt.sum()))
    rows = rng.choice(np.flatnonzero(okt), n_t, replace=False) if n_t else np.array([], int)
    rules = _split(rng, n_t, RULES["travellers"])
    r_date = np.array([x for x, q in zip(rows, rules, strict=True) if q.startswith("date")], int)
    r_nat = np.array([x for x, q in zip(rows, rules, strict=True) if q.startswith("country")], int)
    dep = travs["departure_at"].gather(r_date).to_list() if len(r_date) else []
    half = len(r_date) // 2
    travs = _scatter(
        travs, "booked_at", r_date[:half], [d + dt.timedelta(days=3) for d in dep[:half]]
    )
    travs = _scatter(
        travs,
        "date_of_birth",
        r_date[half:],
        [d.date() + dt.timedelta(days=40) for d in dep[half:]],
    )
    travs = _scatter(
        travs,
        "nationality",
        r_nat,
        [BAD_COUNTRIES[i % len(BAD_COUNTRIES)] for i in range(len(r_nat))],
    )
    records += [("travellers", int(x), "", "date_order:departure_at") for x in r_date]
    records += [("travellers", int(x), "", "country:nationality") for x in r_nat]

    # ---- outcomes
    oko = ~outs["shipment_id"].is_in(bad_ship).to_numpy()
    n_o = min(counts["outcomes"], int(oko.sum()))
    rows = rng.choice(np.flatnonzero(oko), n_o, replace=False) if n_o else np.array([], int)
    rules = _split(rng, n_o, RULES["outcomes"])
    sel = {
        r: np.array([x for x, q in zip(rows, rules, strict=True) if q == r], dtype=np.int64)
        for r in RULES["outcomes"]
    }
    r = sel["parent_missing:shipment_id"]
    outs = _scatter(outs, "shipment_id", r, _missing_ids(rng, len(r)))  # type: ignore[arg-type]
    r = sel["probability:selection_probability"]
    outs = _scatter(
        outs, "selection_probability", r, [0.0 if i % 2 else 1.5 for i in range(len(r))]
    )
    r = sel["finding_category:finding_category"]
    fnd = outs["finding"].gather(r).to_list() if len(r) else []
    outs = _scatter(outs, "finding_category", r, [None if f else "documentary" for f in fnd])
    for rule, rr in sel.items():
        records += [("outcomes", int(x), "", rule) for x in rr]

    out = {"shipments": ships, "items": items, "travellers": travs, "outcomes": outs}
    broken = pl.DataFrame(
        records,
        schema={
            "table": pl.String,
            "row_index": pl.Int64,
            "record_id": pl.String,
            "rule": pl.String,
        },
        orient="row",
    )
    # Fill record ids from the final tables.
    parts = []
    for table, frame in out.items():
        sub = broken.filter(pl.col("table") == table)
        ids = frame[ID_COLUMN[table]].gather(sub["row_index"])
        parts.append(sub.with_columns(ids.alias("record_id")))
    broken = pl.concat(parts).sort("table", "row_index")
    return out, broken
