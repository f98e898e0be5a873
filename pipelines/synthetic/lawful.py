"""Lawful trade: persistent traders (usual goods, partners, offices, modes and
sizes; Zipf-like activity; some appear late or stop), a long tail of occasional
importers (sole traders, one-off importers, new firms every month, each with a
handful of declarations in a short window; a few import hunting goods once
under licence), licensed arms dealers, e-commerce parcels to private persons.
Some shipments are consolidated cargo with many lines of unrelated goods.
Duty fraud is common: some traders (7 % of the established, 9 % of the
occasional) systematically undervalue by 30-70 %. Some lawful lines carry
unusual masses per unit (other models, packaging) and some lawful descriptions
use firearm-part or arms words innocently (oil barrels, trigger sprayers,
printed magazines, "магазин" = shop). Produces *plans*: one row per shipment
and one per goods line, rendered into raw tables later."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pipelines.synthetic import catalog as cat
from pipelines.synthetic.parties import PartyBook
from pipelines.synthetic.timeline import (
    US_PER_DAY,
    US_PER_HOUR,
    office_hours,
    sample_days,
    ser,
    strs,
)

MODES = ("road", "rail", "air", "sea", "post", "express")
MODE_MIX: dict[str, tuple[float, ...]] = {
    # road, rail, air, sea, post, express
    "CN": (0.50, 0.25, 0.05, 0.0, 0.10, 0.10),
    "near": (0.85, 0.15, 0.0, 0.0, 0.0, 0.0),
    "RU": (0.55, 0.33, 0.04, 0.0, 0.03, 0.05),
    "far": (0.45, 0.12, 0.16, 0.005, 0.065, 0.20),
    "south": (0.89, 0.105, 0.0, 0.005, 0.0, 0.0),
}
NEAR = {"KZ", "UZ", "KG", "TJ", "TM", "AZ", "GE"}
SOUTH = {"AF", "PK", "IR"}
RU_SPEAKING = {"RU", "BY", "KZ", "UZ", "KG", "TJ", "TM", "AZ", "GE"}
NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "KZ": ("UZ", "KG"),
    "UZ": ("TJ", "AF", "KZ"),
    "KG": ("TJ", "UZ"),
    "TJ": ("AF",),
    "TM": ("AF", "UZ"),
}
HS_SUFFIX = ("0000", "1000", "9000", "0001", "9009", "", "00", "1900")
HS_SUFFIX_P = (0.3, 0.12, 0.15, 0.05, 0.05, 0.25, 0.05, 0.03)

GOOD_HS = np.array([g.hs6 for g in cat.GOODS])
GOOD_UNIT = np.array([g.unit for g in cat.GOODS])
GOOD_USD_KG = np.array([g.usd_per_kg for g in cat.GOODS])
GOOD_KG_UNIT = np.array([g.kg_per_unit for g in cat.GOODS])
GOOD_SECTOR = np.array([g.sector for g in cat.GOODS])
HS_INDEX = {g.hs6: i for i, g in enumerate(cat.GOODS)}
NON_ARMS = np.flatnonzero(GOOD_SECTOR != "hunting")


def _desc_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    texts: list[str] = []
    en_off, en_n, ru_off, ru_n = [], [], [], []
    for g in cat.GOODS:
        en_off.append(len(texts))
        en_n.append(len(g.en))
        texts.extend(g.en)
        ru_off.append(len(texts))
        ru_n.append(len(g.ru))
        texts.extend(g.ru)
    return (
        np.array(texts, dtype=object),
        np.array(en_off),
        np.array(en_n),
        np.array(ru_off),
        np.array(ru_n),
    )


DESC_TEXT, DESC_EN_OFF, DESC_EN_N, DESC_RU_OFF, DESC_RU_N = _desc_table()
SECTOR_GOODS = {s: np.flatnonzero(s == GOOD_SECTOR) for s in (*cat.SECTORS, "hunting")}


def partner_weights(exclude: str | None = None) -> tuple[list[str], np.ndarray]:
    keys = [k for k in cat.PARTNERS if k != exclude]
    w = np.array([cat.PARTNERS[k][0] for k in keys])
    return keys, w / w.sum()


def mode_mix(partner: str) -> tuple[float, ...]:
    if partner == "CN":
        return MODE_MIX["CN"]
    if partner in ("RU", "BY"):
        return MODE_MIX["RU"]
    if partner in NEAR:
        return MODE_MIX["near"]
    if partner in SOUTH:
        return MODE_MIX["south"]
    return MODE_MIX["far"]


def choose_office(rng: np.random.Generator, country: str, partner: str, mode: str) -> int:
    cands = [i for i, o in enumerate(cat.OFFICES) if o.country == country and mode in o.modes]
    if not cands:
        cands = [i for i, o in enumerate(cat.OFFICES) if o.country == country]
    w = np.array(
        [cat.OFFICES[i].weight * (6.0 if partner in cat.OFFICES[i].faces else 1.0) for i in cands]
    )
    return int(cands[int(rng.choice(len(cands), p=w / w.sum()))])


def currency_for(rng: np.random.Generator, partners: np.ndarray) -> np.ndarray:
    out = np.empty(len(partners), dtype=object)
    u = rng.random(len(partners))
    for p in np.unique(partners):
        m = partners == p
        opts = cat.PARTNERS[str(p)][1] if str(p) in cat.PARTNERS else (("USD", 1.0),)
        cum = np.cumsum([s for _, s in opts])
        k = np.minimum(np.searchsorted(cum, u[m], side="right"), len(opts) - 1)
        out[m] = np.array([c for c, _ in opts], dtype=object)[k]
    return out


@dataclass
class Traders:
    """Lawful consignees (importers) and what they usually do."""

    party: np.ndarray
    country: np.ndarray
    partner: np.ndarray
    consignors: np.ndarray  # (n, 3) party indices
    goods: np.ndarray  # (n, 8) good indices
    n_goods: np.ndarray
    mode: np.ndarray
    office: np.ndarray
    office2: np.ndarray
    scale: np.ndarray  # usual line value in USD
    weight: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    self_declared: np.ndarray
    dealer: np.ndarray  # licensed arms dealer
    individual: np.ndarray
    occasional: np.ndarray  # long-tail importer with a few declarations
    value_factor: np.ndarray  # < 1: systematic undervaluation (duty fraud)


@dataclass
class Plan:
    shipments: pl.DataFrame
    items: pl.DataFrame


def make_traders(
    rng: np.random.Generator,
    book: PartyBook,
    n: int,
    n_dealers: int,
    days: int,
    n_occasional: int = 0,
    occasional_share: float = 0.0,
) -> tuple[Traders, np.ndarray, dict[str, np.ndarray]]:
    """Traders, foreign consignors and customs brokers (declarants) per country.

    Indices [0, n) are established traders, [n, n + n_occasional) occasional
    importers (together `occasional_share` of the trade), then dealers."""
    home = np.array(cat.HOME_COUNTRIES)
    # Consignors abroad (and in neighbouring CA countries).
    n_cnor = max(20, n // 2)
    keys, pw = partner_weights()
    cnor_country = np.array(keys)[rng.choice(len(keys), n_cnor, p=pw)]
    cnor = book.add(cnor_country, "company", cyrillic_share=0.5)
    by_country = {c: cnor[cnor_country == c] for c in keys}
    # Brokers per home country.
    brokers: dict[str, np.ndarray] = {}
    for c in cat.HOME_COUNTRIES:
        nb = max(3, n // 40)
        brokers[c] = book.add(np.full(nb, c), "company", email_share=0.9)

    n_est = n
    n = n_est + n_occasional
    total = n + n_dealers
    country = home[rng.choice(len(home), total, p=np.array(cat.HOME_WEIGHTS))]
    occasional = np.zeros(total, dtype=bool)
    occasional[n_est:n] = True
    individual = rng.random(total) < np.where(occasional, 0.5, 0.22)
    dealer = np.zeros(total, dtype=bool)
    dealer[n:] = True
    individual[n:] = False
    party = np.empty(total, dtype=np.int64)
    party[~individual] = book.add(country[~individual], "company")
    _share_contacts(rng, book, party[~individual], country[~individual], book.frames[-1])
    party[individual] = book.add(country[individual], "individual", entrepreneur=True)

    partner = np.empty(total, dtype=object)
    for c in cat.HOME_COUNTRIES:
        m = country == c
        ks, w = partner_weights(exclude=c)
        partner[m] = np.array(ks, dtype=object)[rng.choice(len(ks), int(m.sum()), p=w)]
    dealer_partners = np.array(["TR", "IT", "RU", "CZ", "US", "DE"], dtype=object)
    partner[dealer] = dealer_partners[rng.integers(0, len(dealer_partners), n_dealers)]
    consignors = np.empty((total, 3), dtype=np.int64)
    for c in np.unique(partner):
        m = np.flatnonzero(partner == c)
        pool = by_country.get(str(c))
        if pool is None or len(pool) == 0:
            pool = cnor
        consignors[m] = pool[rng.integers(0, len(pool), (len(m), 3))]
    # Some secondary suppliers anywhere.
    other = rng.random((total, 3)) < np.array([0.0, 0.25, 0.4])
    consignors[other] = cnor[rng.integers(0, len(cnor), int(other.sum()))]

    sectors = np.array(cat.SECTORS)
    ip_sectors = np.array(["textile", "footwear", "household", "toys_sport", "electronics"])
    s1 = np.where(
        individual,
        ip_sectors[rng.integers(0, len(ip_sectors), total)],
        sectors[rng.integers(0, len(sectors), total)],
    )
    s2 = np.where(rng.random(total) < 0.4, sectors[rng.integers(0, len(sectors), total)], s1)
    goods = np.empty((total, 8), dtype=np.int64)
    use1 = rng.random((total, 8)) < 0.7
    for s in np.unique(np.concatenate([s1, s2])):
        pool = SECTOR_GOODS[str(s)]
        for col in range(8):
            m = np.where(use1[:, col], s1, s2) == s
            goods[m, col] = pool[rng.integers(0, len(pool), int(m.sum()))]
    hunt = SECTOR_GOODS["hunting"]
    extra = np.array([HS_INDEX["900510"], HS_INDEX["950790"], HS_INDEX["900580"]])
    dpool = np.concatenate([hunt, hunt, extra])
    goods[dealer] = dpool[rng.integers(0, len(dpool), (n_dealers, 8))]
    goods[dealer, :4] = [HS_INDEX[h] for h in ("930320", "930330", "930621", "930630")]
    n_goods = rng.integers(2, 9, total)
    n_goods[dealer] = 8
    # A few occasional importers are hunting shops or clubs importing once under licence.
    hunt_once = occasional & ~individual & (rng.random(total) < 0.015)
    goods[hunt_once] = dpool[rng.integers(0, len(dpool), (int(hunt_once.sum()), 8))]
    n_goods[hunt_once] = rng.integers(1, 4, int(hunt_once.sum()))

    mode = np.empty(total, dtype=object)
    office = np.empty(total, dtype=np.int64)
    office2 = np.empty(total, dtype=np.int64)
    u = rng.random(total)
    for i in range(total):
        mix = np.cumsum(mode_mix(str(partner[i])))
        mode[i] = MODES[min(int(np.searchsorted(mix, u[i] * mix[-1], side="right")), 5)]
        if dealer[i]:
            mode[i] = "road" if u[i] < 0.6 else "air"
        office[i] = choose_office(rng, str(country[i]), str(partner[i]), str(mode[i]))
        office2[i] = choose_office(rng, str(country[i]), str(partner[i]), str(mode[i]))
        if mode[i] not in cat.OFFICES[office[i]].modes:
            mode[i] = cat.OFFICES[office[i]].modes[0]
        if mode[i] not in cat.OFFICES[office2[i]].modes:
            office2[i] = office[i]
    scale = np.exp(rng.normal(np.log(6000.0), 1.0, total)) * np.where(individual, 0.4, 1.0)
    scale[occasional] *= 0.6
    ranks = rng.permutation(total) + 1
    weight = (ranks + 10.0) ** (-0.9) * np.exp(rng.normal(0, 0.5, total))
    weight[dealer] = 0.0
    weight[occasional] = 0.0
    weight = weight / weight.sum() * (1.0 - occasional_share)
    if n_occasional:
        intensity = np.exp(rng.normal(0, 0.9, n_occasional))
        weight[occasional] = intensity / intensity.sum() * occasional_share
    lo = np.zeros(total, dtype=np.int64)
    hi = np.full(total, days, dtype=np.int64)
    u = rng.random(total)
    late = (u < 0.2) & ~dealer & ~occasional
    early = (u >= 0.2) & (u < 0.33) & ~dealer & ~occasional
    lo[late] = rng.integers(0, max(days - 30, 1), int(late.sum()))
    hi[early] = rng.integers(min(60, days - 1), days, int(early.sum()))
    hi = np.maximum(hi, lo + 30).clip(max=days)
    # Occasional importers: a few declarations within 2 weeks to 10 months.
    k_occ = int(occasional.sum())
    span = np.exp(rng.uniform(np.log(14), np.log(300), k_occ)).astype(np.int64)
    lo[occasional] = rng.integers(0, max(days - 14, 1), k_occ)
    hi[occasional] = np.minimum(lo[occasional] + span, days)
    lo = np.minimum(lo, hi - 1)
    value_factor = np.ones(total)
    fraud = ~dealer & (rng.random(total) < np.where(occasional, 0.09, 0.07))
    value_factor[fraud] = rng.uniform(0.3, 0.7, int(fraud.sum()))
    traders = Traders(
        party=party,
        country=country,
        partner=partner,
        consignors=consignors,
        goods=goods,
        n_goods=n_goods,
        mode=mode,
        office=office,
        office2=office2,
        scale=scale,
        weight=weight,
        lo=lo,
        hi=hi,
        self_declared=rng.random(total) < 0.35,
        dealer=dealer,
        individual=individual,
        occasional=occasional,
        value_factor=value_factor,
    )
    return traders, cnor, brokers


COVER_VOCAB: tuple[tuple[str, str], ...] = (
    *cat.PARTS_DESCRIPTIONS,
    *cat.PARTS_WORDED,
    *cat.AMMO_COVER,
    *cat.OPTICS_COVER,
    *cat.POSTAL_COVER,
    *cat.POSTAL_WORDED,
)
COVER_GOOD = np.array([HS_INDEX[h] for h, _ in COVER_VOCAB])
COVER_TEXT = np.array([d for _, d in COVER_VOCAB], dtype=object)
INNOCENT_GOOD = np.array([HS_INDEX[h] for h, _ in cat.INNOCENT_WORDED])
INNOCENT_TEXT = np.array([d for _, d in cat.INNOCENT_WORDED], dtype=object)


def with_cover_wording(
    rng: np.random.Generator, good: np.ndarray, rate: float, innocent: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lawful lines that happen to be worded like the traffickers' cover goods
    (real tool holders, valve spools, binoculars; share `rate`) or use part words
    innocently (oil barrels, print magazines; share `innocent`): goods, mask, texts."""
    u = rng.random(len(good))
    mask = u < rate + innocent
    cover = u < rate
    good = good.copy()
    texts = np.empty(len(good), dtype=object)
    pick = rng.integers(0, len(COVER_VOCAB), len(good))
    pick_i = rng.integers(0, len(INNOCENT_GOOD), len(good))
    m1 = cover
    m2 = mask & ~cover
    good[m1] = COVER_GOOD[pick[m1]]
    texts[m1] = COVER_TEXT[pick[m1]]
    good[m2] = INNOCENT_GOOD[pick_i[m2]]
    texts[m2] = INNOCENT_TEXT[pick_i[m2]]
    return good, mask, texts[mask]


def _share_contacts(
    rng: np.random.Generator,
    book: PartyBook,
    parties: np.ndarray,
    country: np.ndarray,
    frame: pl.DataFrame,
) -> None:
    """Lawful companies also share addresses (registered in the same business
    centre) and phones (same accountant or agent): 6 % and 3 %."""
    centres: dict[str, list[str]] = {}
    for addr, c in cat.BUSINESS_CENTRES:
        centres.setdefault(c, []).append(addr)
    phone = frame["phone"].to_numpy()
    for c in np.unique(country):
        idx = np.flatnonzero(country == c)
        opts = centres.get(str(c))
        if opts:
            m = idx[rng.random(len(idx)) < 0.06]
            book.set_column(
                parties[m],
                "address",
                np.array(opts, dtype=object)[rng.integers(0, len(opts), len(m))],
            )
        m = idx[rng.random(len(idx)) < 0.03]
        if len(m):
            donor = idx[rng.integers(0, len(idx), len(m))]
            book.set_column(parties[m], "phone", phone[donor])


def _line_counts(rng: np.random.Generator, n: int, p: float, tail: float) -> np.ndarray:
    k = rng.geometric(p, n)
    heavy = rng.random(n) < tail
    k[heavy] += rng.integers(4, 40, int(heavy.sum()))
    return k.astype(np.int64)


def shipment_frame(
    *,
    consignee: np.ndarray,
    consignor: np.ndarray,
    declarant: np.ndarray,
    office: np.ndarray,
    mode: np.ndarray,
    ts: np.ndarray,
    origin: np.ndarray,
    dispatch: np.ndarray,
    destination: np.ndarray,
    currency: np.ndarray,
    odd_transit: np.ndarray | None = None,
    typology: str | None = None,
    network: np.ndarray | None = None,
    displaced: bool = False,
) -> pl.DataFrame:
    n = len(consignee)
    return pl.DataFrame(
        {
            "consignee": consignee.astype(np.int64),
            "consignor": consignor.astype(np.int64),
            "declarant": declarant.astype(np.int64),
            "office": office.astype(np.int64),
            "mode": strs(mode),
            "ts": ts.astype(np.int64),
            "origin": strs(origin),
            "dispatch": strs(dispatch),
            "destination": strs(destination),
            "currency": strs(currency),
            "odd_transit": ser(
                odd_transit if odd_transit is not None else np.full(n, None), dtype=pl.String
            ),
            "typology": ser(np.full(n, typology), dtype=pl.String),
            "network": ser(network if network is not None else np.full(n, None), dtype=pl.String),
            # the network keeps the listed high-risk countries out of its route
            "displaced": np.full(n, displaced, dtype=bool),
        }
    )


def item_frame(
    *,
    ship: np.ndarray,
    good: np.ndarray,
    desc: np.ndarray,
    qty: np.ndarray,
    net: np.ndarray,
    value_usd: np.ndarray,
    origin: np.ndarray,
    hs_suffix: np.ndarray,
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ship": ship.astype(np.int64),
            "good": good.astype(np.int64),
            "hs_code": strs(GOOD_HS[good]) + strs(hs_suffix),
            "description": strs(desc),
            "quantity": qty.astype(np.float64),
            "quantity_unit": strs(GOOD_UNIT[good]),
            "net_mass_kg": net.astype(np.float64),
            "value_usd": value_usd.astype(np.float64),
            "origin_country": strs(origin),
        }
    )


def lines(
    rng: np.random.Generator,
    good: np.ndarray,
    target_usd: np.ndarray,
    ru: np.ndarray,
    value_factor: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Quantities, masses, values and descriptions for goods lines of a target value;
    `value_factor` (per line) scales the declared value (systematic undervaluation)."""
    n = len(good)
    kg_unit = GOOD_KG_UNIT[good]
    # other models, sizes or packaging: a mass per unit far from the usual one
    odd_mass = rng.random(n) < 0.06
    kg_unit = np.where(odd_mass, kg_unit * np.exp(rng.normal(0, 0.7, n)), kg_unit)
    usd_kg = GOOD_USD_KG[good]
    unit_price = kg_unit * usd_kg
    qty = target_usd / unit_price
    counted = GOOD_UNIT[good] != "KGM"
    qty = np.where(counted, np.maximum(np.round(qty), 1.0), np.maximum(np.round(qty, 1), 0.5))
    net = qty * kg_unit * np.exp(rng.normal(0, 0.08, n))
    net = np.where(counted, net, qty)
    net = np.maximum(np.round(net, 3), 0.001)
    value = net * usd_kg * np.exp(rng.normal(0, 0.25, n))
    under = rng.random(n) < 0.03  # lawful undervaluation exists too
    value = np.where(under, value * rng.uniform(0.15, 0.5, n), value)
    if value_factor is not None:
        value = value * value_factor
    off = np.where(ru, DESC_RU_OFF[good], DESC_EN_OFF[good])
    cnt = np.where(ru, DESC_RU_N[good], DESC_EN_N[good])
    desc = DESC_TEXT[off + (rng.random(n) * cnt).astype(np.int64)]
    suffix = np.array(HS_SUFFIX)[rng.choice(len(HS_SUFFIX), n, p=np.array(HS_SUFFIX_P))]
    return {"qty": qty, "net": net, "value": value, "desc": desc, "suffix": suffix}


def trader_plan(
    rng: np.random.Generator,
    tr: Traders,
    brokers: dict[str, np.ndarray],
    n_ship: int,
    start_us: int,
    day_w: np.ndarray,
    party_country: np.ndarray,
) -> Plan:
    n_dealer_ship = int(rng.binomial(n_ship, 0.0012)) if tr.dealer.any() else 0
    t_norm = rng.choice(len(tr.weight), n_ship - n_dealer_ship, p=tr.weight)
    dealers = np.flatnonzero(tr.dealer)
    t_dealer = dealers[rng.integers(0, max(len(dealers), 1), n_dealer_ship)]
    t = np.concatenate([t_norm, t_dealer]).astype(np.int64)
    n = len(t)
    day = sample_days(rng, day_w, tr.lo[t], tr.hi[t])
    ts = start_us + day * US_PER_DAY + office_hours(rng, n)
    slot = rng.choice(3, n, p=[0.7, 0.2, 0.1])
    consignor = tr.consignors[t, slot]
    book_country = tr.partner[t]
    use2 = rng.random(n) < 0.12
    office = np.where(use2, tr.office2[t], tr.office[t])
    mode = tr.mode[t]
    # Origin: the supplier's country; some re-exports dispatched from a hub.
    origin = party_country[consignor].astype(object)
    origin = np.where(origin == tr.country[t], book_country, origin)
    dispatch = origin.copy()
    hub = rng.random(n) < 0.04
    hubs = np.array(["AE", "TR", "KZ", "RU", "IR", "AF"], dtype=object)
    hub_p = np.array([0.35, 0.25, 0.15, 0.15, 0.06, 0.04])
    dispatch[hub] = hubs[rng.choice(len(hubs), int(hub.sum()), p=hub_p)]
    dispatch = np.where(dispatch == tr.country[t], origin, dispatch)
    destination = tr.country[t].copy()
    onward = rng.random(n) < 0.02
    for c, nb in NEIGHBOURS.items():
        m = onward & (destination == c)
        destination[m] = np.array(nb, dtype=object)[rng.integers(0, len(nb), int(m.sum()))]
    odd = np.full(n, None, dtype=object)
    odd_m = (rng.random(n) < 0.012) & np.isin(mode, ["road", "rail", "air", "sea"])
    odd[odd_m] = np.array(cat.ODD_TRANSIT, dtype=object)[
        rng.integers(0, len(cat.ODD_TRANSIT), int(odd_m.sum()))
    ]
    # Air freight often connects through a hub.
    hub_air = (mode == "air") & (rng.random(n) < 0.15) & ~odd_m
    odd[hub_air] = np.array(["TR", "AE", "RU"], dtype=object)[
        rng.integers(0, 3, int(hub_air.sum()))
    ]
    declarant = np.where(
        tr.self_declared[t],
        tr.party[t],
        0,
    )
    for c, pool in brokers.items():
        m = ~tr.self_declared[t] & (tr.country[t] == c)
        declarant[m] = pool[rng.integers(0, len(pool), int(m.sum()))]
    currency = currency_for(rng, origin)
    ships = shipment_frame(
        consignee=tr.party[t],
        consignor=consignor,
        declarant=declarant,
        office=office,
        mode=mode,
        ts=ts,
        origin=origin,
        dispatch=dispatch,
        destination=destination,
        currency=currency,
        odd_transit=odd,
    )
    k = _line_counts(rng, n, 0.6, 0.04)
    # consolidated cargo (groupage, "сборный груз"): many lines of unrelated goods
    groupage = (rng.random(n) < 0.06) & ~tr.dealer[t]
    k[groupage] += rng.integers(4, 20, int(groupage.sum()))
    ship = np.repeat(np.arange(n), k)
    ti = t[ship]
    good = tr.goods[ti, (rng.random(len(ship)) * tr.n_goods[ti]).astype(np.int64)]
    rnd = ((rng.random(len(ship)) < 0.07) | (groupage[ship] & (rng.random(len(ship)) < 0.7))) & (
        ~tr.dealer[ti]
    )
    good[rnd] = NON_ARMS[rng.integers(0, len(NON_ARMS), int(rnd.sum()))]
    ru_p = np.where(np.isin(origin, list(RU_SPEAKING)), 0.75, np.where(origin == "CN", 0.3, 0.1))
    ru = rng.random(n) < ru_p
    target = tr.scale[ti] * np.exp(rng.normal(0, 0.8, len(ship))) / np.sqrt(k[ship])
    good, worded, texts = with_cover_wording(rng, good, 0.004, 0.012)
    li = lines(rng, good, target, ru[ship], tr.value_factor[ti])
    li["desc"][worded] = texts
    item_origin = origin[ship].copy()
    mixed = rng.random(len(ship)) < 0.08
    item_origin[mixed] = np.array(["CN", "TR", "RU", "KR", "DE"], dtype=object)[
        rng.integers(0, 5, int(mixed.sum()))
    ]
    items = item_frame(
        ship=ship,
        good=good,
        desc=li["desc"],
        qty=li["qty"],
        net=li["net"],
        value_usd=li["value"],
        origin=item_origin,
        hs_suffix=li["suffix"],
    )
    return Plan(ships, items)


def ecommerce_plan(
    rng: np.random.Generator,
    book: PartyBook,
    brokers: dict[str, np.ndarray],
    n_ship: int,
    start_us: int,
    day_w: np.ndarray,
) -> Plan:
    """B2C parcels by post/express from marketplace sellers to private persons."""
    days = len(day_w)
    n = n_ship
    seller_c = np.array(["CN"] * 12 + ["TR"] * 3 + ["RU"] * 2 + ["KR", "DE", "US"], dtype=object)
    n_sellers = max(10, n // 100)
    sellers = book.add(seller_c[rng.integers(0, len(seller_c), n_sellers)], "company")
    s_country = np.array(book.frames[-1]["country"].to_list(), dtype=object)
    sw = (rng.permutation(n_sellers) + 1.0) ** -1.2
    s = rng.choice(n_sellers, n, p=sw / sw.sum())
    home = np.array(cat.HOME_COUNTRIES, dtype=object)
    country = home[rng.choice(len(home), n, p=np.array(cat.HOME_WEIGHTS))]
    n_people = max(1, int(n * 0.8))
    p_country = country[:n_people]
    people = book.add(p_country, "individual", entrepreneur=False, email_share=0.8)
    who = np.arange(n)
    repeat = who >= n_people
    who[repeat] = rng.integers(0, n_people, int(repeat.sum()))
    country = p_country[who]
    consignee = people[who]
    mode = np.where(rng.random(n) < 0.55, "post", "express").astype(object)
    office = np.empty(n, dtype=np.int64)
    for c in cat.HOME_COUNTRIES:
        for md in ("post", "express"):
            m = (country == c) & (mode == md)
            cands = [i for i, o in enumerate(cat.OFFICES) if o.country == c and md in o.modes]
            w = np.array([cat.OFFICES[i].weight for i in cands])
            office[m] = np.array(cands)[rng.choice(len(cands), int(m.sum()), p=w / w.sum())]
    day = sample_days(rng, day_w, np.zeros(n, dtype=np.int64), np.full(n, days))
    ts = start_us + day * US_PER_DAY + office_hours(rng, n)
    origin = s_country[s]
    declarant = np.empty(n, dtype=np.int64)
    for c, pool in brokers.items():
        m = country == c
        declarant[m] = pool[rng.integers(0, min(len(pool), 3), int(m.sum()))]
    ships = shipment_frame(
        consignee=consignee,
        consignor=sellers[s],
        declarant=declarant,
        office=office,
        mode=mode,
        ts=ts,
        origin=origin,
        dispatch=origin,
        destination=country,
        currency=currency_for(rng, origin),
    )
    k = _line_counts(rng, n, 0.7, 0.01)
    ship = np.repeat(np.arange(n), k)
    consumer = np.concatenate(
        [
            SECTOR_GOODS[x]
            for x in ("textile", "footwear", "electronics", "toys_sport", "household", "optics")
        ]
    )
    good = consumer[rng.integers(0, len(consumer), len(ship))]
    parts = rng.random(len(ship)) < 0.14  # lawful parts by post exist
    parts_pool = np.concatenate([SECTOR_GOODS["auto"], SECTOR_GOODS["tools"]])
    good[parts] = parts_pool[rng.integers(0, len(parts_pool), int(parts.sum()))]
    target = np.exp(rng.normal(np.log(40.0), 0.9, len(ship)))
    ru = rng.random(n) < np.where(origin == "RU", 0.9, 0.25)
    li = lines(rng, good, target, ru[ship])
    small = GOOD_KG_UNIT[good] > 30  # no fridges by post
    good = np.where(small, HS_INDEX["950300"], good)
    good, worded, texts = with_cover_wording(rng, good, 0.008, 0.006)
    li = lines(rng, good, target, ru[ship])
    li["desc"][worded] = texts
    items = item_frame(
        ship=ship,
        good=good,
        desc=li["desc"],
        qty=li["qty"],
        net=li["net"],
        value_usd=li["value"],
        origin=origin[ship],
        hs_suffix=li["suffix"],
    )
    return Plan(ships, items)


def arrival_offset(rng: np.random.Generator, mode: np.ndarray) -> np.ndarray:
    hours = np.where(
        np.isin(mode, ["post", "express"]),
        rng.uniform(12, 240, len(mode)),
        np.where(mode == "air", rng.uniform(2, 30, len(mode)), rng.uniform(1, 96, len(mode))),
    )
    return (hours * US_PER_HOUR).astype(np.int64)
