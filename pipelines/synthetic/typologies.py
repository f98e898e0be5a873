"""Arms-trafficking networks. Each typology plants shipments (and, for couriers,
journeys) with the signals listed below. Every one of these signals also occurs
in lawful trade at some rate (new consignees with a handful of declarations,
systematic undervaluation, odd masses per unit, part words in innocent senses,
parts by post, odd transit, shared business-centre addresses, shuttle traders
who fly to Istanbul, Dubai or Kabul), so no single field gives a network away.
Many networks hide behind an established, compromised lawful company (its long
history, usual supplier and usual declarant), many pay duties at plausible
values, and new network companies declare themselves as often as lawful ones.
A seizure burns a network's front: its later shipments come under a new
consignee and consignor (see `world._burn`).

Route displacement: the historical rule R-HIGH-RISK-ROUTE (origin, dispatch or
transit in AF, PK, IR, SY or IQ draws an inspection three times in ten; see
`policy`) is old and known to every forwarder in the region, and traffickers
adapt to a known profile. A share of the networks (`WorldConfig.
displacement_share`, a trait drawn once per network) keeps the listed countries
out of its declared origin, dispatch and transit: a listed partner country is
replaced by a transhipment or re-export hub (AE, TR, AZ, or a neighbouring
Central Asian market: `catalog.DISPLACEMENT_HUBS`), a usual corridor through a
listed country takes the way around it (Iran by the trans-Caspian crossing:
`catalog.DISPLACED_TRANSIT`), an odd detour goes through a hub that is just as
far off the corridor, and an abused lawful front is one whose usual trade does
not touch the listed countries. Every other signal of the typology stays; the
hubs are common in lawful trade, and lawful trade keeps using the listed routes.
The countries named below are those of the networks that do not adapt.

- parts_misdeclared: firearm parts declared under neighbouring codes (machine-tool
  parts 8466, gearing 8483, valves 8481, hand tools 8205/8207, auto parts 8708,
  fitness equipment 9506, fittings 7307/7412) with specific-sounding descriptions,
  about 38 % of them with part words in a civilian sense ("trigger assembly kit
  for pneumatic tool", "nail magazine", "receiver housing", "затворная рама");
  the line is undervalued (20-50 % of the code's usual value per kg) in 70 % of
  networks, plausibly valued (70-110 %) in the rest; new consignee active a few
  months (70 % of networks abuse an established lawful importer instead);
  origin TR/CN/PK/AE/RU. Signals: part words, hiding headings, value/kg below
  the code's norm, young consignee.
- ammo_mixed: ammunition in a mixed consignment: many lines (6-20) of ordinary
  goods and one line declared as fasteners, ball bearings or ceramic items whose
  mass per unit is 1.5-4x the norm and value per kg 10-30 % of it (60-100 % in
  30 % of networks). Signals: many lines, one line's kg/unit (and value/kg) off,
  road from CN/TR/IR/AF; 70 % of networks use an established lawful importer.
- front_company: 3-6 new consignees sharing an address and/or phone, 1-3 shipments
  each within a few weeks, then gone; goods look ordinary and fairly valued.
  Signals: shared phone/address between recent consignees, short life, few shipments.
- licensed_diversion: chapter 93 imports (930320, 930330, 930621, 930630) either by
  an established licensed dealer whose quantities grow 2-6x over the network's
  life, or by a consignee that never imported chapter 93 before; 40 % consigned
  onward to a neighbour (AF/TJ/KG/UZ). Signals: growth of ch. 93 volume per
  consignee, ch. 93 consignee without history, destination != office country.
- postal_split: one sender (same name spelling or phone) sends 8-25 small post or
  express parcels of parts (8708, 8466, 9506, 3926, 8205) to different new private
  consignees in a few weeks; a third of them give the same phone; about 38 % of
  the parts lines use part words ("recoil spring", "slide rail", "grips");
  most networks declare low values (15-50 % of the usual value per kg).
  Signals: one consignor -> many new consignees in a short window, shared phone,
  parts by post at low value.
- courier_traveller: a consignee (half of them established lawful traders) whose
  owner (same person or a spelling variant of the name) or associate (same
  phone, same address) flies to high-risk areas
  (Kabul, Mazar, Islamabad/Peshawar, Tehran/Mashhad, Gaziantep/Hatay, Hairatan)
  3-30 days before each shipment, often one way and paying cash.
  Signals: linked traveller, recent trip to a high-risk port before the shipment.
- illogical_route: goods that should come direct (CN, KR, TR, DE -> CA) routed
  through AF, PK, IQ, SY, IR or AE, half dispatched from a third country (a
  displaced network: through and from AE, TR, AZ or a Central Asian neighbour off
  the corridor).
  Signals: transit country not on the corridor, dispatch != origin (60 % of
  networks use an established importer's name).
- dual_use_optics: thermal/night-vision sights declared as binoculars, monoculars,
  trail cameras or toy telescopes (9005, 8525, 9503) by express/air/post, value
  per kg 5-18 % of the norm (25-50 % in 35 % of networks) and mass per unit
  1.3-2.5x it; half the networks use an established importer.
  Signals: optics with heavy units at low value, express from CN/TR/AE/RU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pipelines.synthetic import catalog as cat
from pipelines.synthetic.lawful import (
    GOOD_KG_UNIT,
    GOOD_UNIT,
    GOOD_USD_KG,
    HS_INDEX,
    HS_SUFFIX,
    HS_SUFFIX_P,
    RU_SPEAKING,
    SECTOR_GOODS,
    Plan,
    Traders,
    choose_office,
    currency_for,
    item_frame,
    lines,
    shipment_frame,
)
from pipelines.synthetic.parties import PartyBook
from pipelines.synthetic.timeline import US_PER_DAY, office_hours

TYPOLOGIES: tuple[str, ...] = (
    "parts_misdeclared",
    "ammo_mixed",
    "front_company",
    "licensed_diversion",
    "postal_split",
    "courier_traveller",
    "illogical_route",
    "dual_use_optics",
)
DEFAULT_TYPOLOGY_RATES: dict[str, float] = {
    "parts_misdeclared": 0.0008,
    "ammo_mixed": 0.0006,
    "front_company": 0.0005,
    "licensed_diversion": 0.0004,
    "postal_split": 0.0006,
    "courier_traveller": 0.0004,
    "illogical_route": 0.0004,
    "dual_use_optics": 0.0003,
}
NETWORK_SIZE: dict[str, tuple[int, int]] = {
    "parts_misdeclared": (3, 10),
    "ammo_mixed": (3, 8),
    "front_company": (4, 12),
    "licensed_diversion": (4, 12),
    "postal_split": (8, 25),
    "courier_traveller": (3, 8),
    "illogical_route": (3, 8),
    "dual_use_optics": (3, 10),
}
DETECTION: dict[str, float] = {
    "parts_misdeclared": 0.8,
    "ammo_mixed": 0.75,
    "front_company": 0.8,
    "licensed_diversion": 0.85,
    "postal_split": 0.75,
    "courier_traveller": 0.8,
    "illogical_route": 0.8,
    "dual_use_optics": 0.78,
}
FINDING: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "parts_misdeclared": (("parts",), (1.0,)),
    "ammo_mixed": (("ammunition",), (1.0,)),
    "front_company": (("firearms", "parts"), (0.6, 0.4)),
    "licensed_diversion": (("firearms", "ammunition"), (0.7, 0.3)),
    "postal_split": (("parts",), (1.0,)),
    "courier_traveller": (("firearms", "ammunition", "parts"), (0.4, 0.3, 0.3)),
    "illogical_route": (("firearms", "ammunition"), (0.6, 0.4)),
    "dual_use_optics": (("dual_use",), (1.0,)),
}
HOME = np.array(cat.HOME_COUNTRIES, dtype=object)
HOME_P = np.array(cat.HOME_WEIGHTS)


@dataclass
class CourierTrip:
    """One journey of a courier: who, when, where, and which party he is linked to."""

    party: int
    link_kind: str
    departure_us: int
    route: tuple[str, ...]
    phone: str | None
    address: str | None
    sur: int  # surname index (-1: random person)
    given: int
    female: bool


@dataclass(frozen=True)
class Known:
    """An established lawful trader a network hides behind."""

    party: int
    country: str
    partner: str
    consignor: int
    self_declared: bool


@dataclass
class Ctx:
    rng: np.random.Generator
    book: PartyBook
    traders: Traders
    brokers: dict[str, np.ndarray]
    start_us: int
    days: int
    day_w: np.ndarray
    ships: list[pl.DataFrame] = field(default_factory=list)
    items: list[pl.DataFrame] = field(default_factory=list)
    trips: list[CourierTrip] = field(default_factory=list)
    n_ships: int = 0
    n_networks: int = 0
    # route displacement (see the module docstring): the share of networks that
    # keep the listed countries out of their declared routes, the network now
    # being planted, and the stream its trait and hubs are drawn from (its own,
    # so that the other draws of every network do not depend on the share)
    displacement_share: float = 0.0
    trait_rng: np.random.Generator = field(
        default_factory=lambda: np.random.Generator(np.random.PCG64(0))
    )
    displaced: bool = False

    def network_id(self) -> str:
        self.n_networks += 1
        return f"NW{self.n_networks:05d}"

    def hub(self, exclude: tuple[str, ...] = ()) -> str:
        """A transhipment or re-export hub (`catalog.DISPLACEMENT_HUBS`) not in `exclude`."""
        hubs = [h for h in cat.DISPLACEMENT_HUBS if h not in exclude] or list(cat.DISPLACEMENT_HUBS)
        w = np.array([cat.DISPLACEMENT_HUB_WEIGHTS[cat.DISPLACEMENT_HUBS.index(h)] for h in hubs])
        return str(hubs[int(self.trait_rng.choice(len(hubs), p=w / w.sum()))])

    def displace(self, values: np.ndarray, *exclude: np.ndarray) -> np.ndarray:
        """`values` with every listed (high-risk) country replaced by a hub that is
        none of the countries `exclude[j][i]` of the same shipment."""
        out = values.copy()
        for i in np.flatnonzero(np.isin(values.astype(str), cat.HIGH_RISK_COUNTRIES)):
            out[i] = self.hub(tuple(str(e[i]) for e in exclude))
        return out

    def days_in(self, n: int, span: tuple[int, int]) -> np.ndarray:
        """n sorted days of a campaign lasting a random number of days within `span`.
        A campaign may have begun before the period or go on after it (at least half
        of it lies inside), so that networks are as active at the ends of the period
        as in its middle: the newest months, which models are tested on, hold their
        share of trafficking. The n shipments fall on the campaign's days inside."""
        length = int(self.rng.integers(span[0], span[1] + 1))
        length = min(length, self.days)
        half = length // 2
        start = int(self.rng.integers(-half, max(self.days - half, 1)))
        lo, hi = max(start, 0), min(start + length, self.days)
        return np.sort(lo + self.rng.integers(0, max(hi - lo, 1), n))

    def established(
        self, individual: bool | None = False, partners: tuple[str, ...] | None = None
    ) -> Known | None:
        """An established lawful trader (a company unless `individual`) whose name,
        supplier and declarant a network abuses, so that its shipments come with a
        long, normal history."""
        tr = self.traders
        ok = ~tr.dealer & ~tr.occasional & (tr.weight > 0)
        if individual is not None:
            ok &= tr.individual == individual
        if partners is not None:
            ok &= np.isin(tr.partner, list(partners))
        pool = np.flatnonzero(ok)
        if len(pool) == 0:
            return None
        # half the time a firm that started trading during the period: criminals
        # favour young firms with a short clean record (or buy shelf companies)
        young = pool[tr.lo[pool] > 0]
        if len(young) and self.rng.random() < 0.5:
            pool = young
        t = int(pool[self.rng.integers(0, len(pool))])
        return Known(
            int(tr.party[t]),
            str(tr.country[t]),
            str(tr.partner[t]),
            int(tr.consignors[t, 0]),
            bool(tr.self_declared[t]),
        )

    def broker(self, country: str, n: int) -> np.ndarray:
        pool = self.brokers[country]
        return pool[self.rng.integers(0, len(pool), n)]

    def add(
        self,
        typology: str,
        network: str,
        *,
        consignee: np.ndarray,
        consignor: np.ndarray,
        country: str,
        partner: str,
        mode: np.ndarray,
        days: np.ndarray,
        line_goods: list[np.ndarray],
        line_targets: list[np.ndarray],
        special: list[tuple[int, str, float, float, float]],
        origin: np.ndarray | None = None,
        dispatch: np.ndarray | None = None,
        destination: np.ndarray | None = None,
        odd: np.ndarray | None = None,
        declarant: np.ndarray | None = None,
        office: np.ndarray | None = None,
        self_declared: bool | None = None,
    ) -> None:
        """Add shipments; `special[i]` = (good, description, qty, net kg, value USD)
        appended as the last line of shipment i (good < 0: none)."""
        rng = self.rng
        n = len(consignee)
        if office is None:
            office = np.array([choose_office(rng, country, partner, str(m)) for m in mode])
        mode = np.array(
            [
                m if m in cat.OFFICES[o].modes else cat.OFFICES[o].modes[0]
                for m, o in zip(mode, office, strict=True)
            ],
            dtype=object,
        )
        origin = np.full(n, partner, dtype=object) if origin is None else origin
        dispatch = origin if dispatch is None else dispatch
        destination = np.full(n, country, dtype=object) if destination is None else destination
        if self.displaced:
            same = dispatch == origin
            origin = self.displace(origin, destination)
            dispatch = np.where(same, origin, self.displace(dispatch, destination, origin))
            if odd is not None:
                odd = self._odd_hubs(odd, origin, dispatch, destination, mode)
        ts = self.start_us + days.astype(np.int64) * US_PER_DAY + office_hours(rng, n)
        if declarant is None:
            # parcels are mostly declared by the few express/post brokers, as in lawful trade
            declarant = self.broker(country, n)
            pool = self.brokers[country][:3]
            parcel = np.isin(mode, ["post", "express"]) & (rng.random(n) < 0.7)
            declarant[parcel] = pool[rng.integers(0, len(pool), int(parcel.sum()))]
            # as many importers do, some networks declare themselves
            if self_declared is None:
                self_declared = bool(rng.random() < 0.3)
            if self_declared:
                own = ~np.isin(mode, ["post", "express"])
                declarant[own] = consignee[own]
        frame = shipment_frame(
            consignee=consignee,
            consignor=consignor,
            declarant=declarant,
            office=office,
            mode=mode,
            ts=ts,
            origin=origin,
            dispatch=dispatch,
            destination=destination,
            currency=currency_for(rng, origin),
            odd_transit=odd,
            typology=typology,
            network=np.full(n, network, dtype=object),
            displaced=self.displaced,
        )
        self.ships.append(frame)
        ru_p = 0.75 if partner in RU_SPEAKING else 0.3 if partner == "CN" else 0.1
        ru = rng.random() < ru_p
        for i in range(n):
            goods = line_goods[i]
            li = lines(rng, goods, line_targets[i], np.full(len(goods), ru))
            g_all = list(goods)
            desc = list(li["desc"])
            qty, net, val = list(li["qty"]), list(li["net"]), list(li["value"])
            suffix = list(li["suffix"])
            g, d, q, m, v = special[i]
            if g >= 0:
                if GOOD_UNIT[g] == "KGM":  # goods counted in kg: quantity is the mass
                    q = round(m, 3)
                pos = int(rng.integers(0, len(g_all) + 1))
                g_all.insert(pos, g)
                desc.insert(pos, d)
                qty.insert(pos, q)
                net.insert(pos, round(m, 3))
                val.insert(pos, v)
                suffix.insert(pos, str(rng.choice(HS_SUFFIX, p=np.array(HS_SUFFIX_P))))
            k = len(g_all)
            self.items.append(
                item_frame(
                    ship=np.full(k, self.n_ships + i),
                    good=np.array(g_all),
                    desc=np.array(desc, dtype=object),
                    qty=np.array(qty, dtype=float),
                    net=np.array(net, dtype=float),
                    value_usd=np.array(val, dtype=float),
                    origin=np.full(k, origin[i], dtype=object),
                    hs_suffix=np.array(suffix, dtype=object),
                )
            )
        self.n_ships += n

    def _odd_hubs(
        self,
        odd: np.ndarray,
        origin: np.ndarray,
        dispatch: np.ndarray,
        destination: np.ndarray,
        mode: np.ndarray,
    ) -> np.ndarray:
        """Odd transit through a hub instead of a listed country: still off the usual
        corridor (not the origin, the dispatch, the destination nor a corridor country)."""
        out = odd.copy()
        for i in np.flatnonzero(np.isin(odd.astype(str), cat.HIGH_RISK_COUNTRIES)):
            corridor: tuple[str, ...] = ()
            if mode[i] in ("road", "rail", "sea"):
                base = cat.SURFACE_TRANSIT.get((str(dispatch[i]), str(destination[i])), ())
                corridor = tuple(cat.DISPLACED_TRANSIT.get(c, c) for c in base)
            out[i] = self.hub((str(origin[i]), str(dispatch[i]), str(destination[i]), *corridor))
        return out

    def partner(self, options: tuple[str, ...], p: tuple[float, ...] | None, home: str) -> str:
        """The network's partner country, picked from `options` as before; a network
        that avoids the listed countries goes through a hub instead of a listed one."""
        partner = _pick(self.rng, options, p)
        if self.displaced and partner in cat.HIGH_RISK_COUNTRIES:
            partner = self.hub((home,))
        return partner

    def cover(
        self, sectors: tuple[str, ...], k: int, scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        pool = np.concatenate([SECTOR_GOODS[s] for s in sectors])
        goods = pool[self.rng.integers(0, len(pool), k)]
        return goods, scale * np.exp(self.rng.normal(0, 0.6, k)) / np.sqrt(max(k, 1))


def _pick(
    rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...] | None = None
) -> str:
    w = None if p is None else np.array(p) / np.sum(p)
    return str(options[int(rng.choice(len(options), p=w))])


def _home(rng: np.random.Generator) -> str:
    return str(HOME[rng.choice(len(HOME), p=HOME_P)])


def _special(
    rng: np.random.Generator, hs6: str, desc: str, qty: float, kg_unit: float, price_factor: float
) -> tuple[int, str, float, float, float]:
    g = HS_INDEX[hs6]
    net = qty * kg_unit
    value = net * GOOD_USD_KG[g] * price_factor
    return g, desc, float(qty), float(net), float(value)


def _parties(
    ctx: Ctx,
    country: str,
    partner: str,
    p_known: float,
    *,
    kind: str = "company",
    individual: bool | None = False,
    partners: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, Known | None]:
    """Consignee and consignor of a network: new parties, or (with `p_known`) an
    established lawful trader and its usual supplier."""
    cnee = ctx.book.add(np.array([country]), kind)
    cnor = ctx.book.add(np.array([partner]), "company")
    if ctx.displaced:  # a front whose usual trade does not touch the listed countries
        partners = tuple(
            p for p in (partners or tuple(cat.PARTNERS)) if p not in cat.HIGH_RISK_COUNTRIES
        )
    known = ctx.established(individual, partners) if ctx.rng.random() < p_known else None
    if known is not None:
        cnee, cnor = np.array([known.party]), np.array([known.consignor])
    return cnee, cnor, known


def parts_misdeclared(ctx: Ctx, n: int, net: str) -> None:
    rng = ctx.rng
    country = _home(rng)
    partner = ctx.partner(("TR", "CN", "PK", "AE", "RU"), (3, 3, 1.5, 1.5, 1), country)
    cnee, cnor, known = _parties(ctx, country, partner, 0.7)
    if known is not None:
        country, partner = known.country, known.partner
    days = ctx.days_in(n, (60, 300))
    modes = np.array([_pick(rng, ("road", "air", "express"), (0.7, 0.15, 0.15)) for _ in range(n)])
    price = (0.7, 1.1) if rng.random() < 0.3 else (0.2, 0.5)  # some pay duties
    goods, targets, special = [], [], []
    for _ in range(n):
        g, t = ctx.cover(("machinery", "tools", "auto"), int(rng.integers(0, 4)), 5000)
        goods.append(g)
        targets.append(t)
        if rng.random() < 0.38:
            hs6, part_desc = cat.PARTS_WORDED[int(rng.integers(0, len(cat.PARTS_WORDED)))]
        else:
            hs6, part_desc = cat.PARTS_DESCRIPTIONS[
                int(rng.integers(0, len(cat.PARTS_DESCRIPTIONS)))
            ]
            if rng.random() < 0.5:
                gi = HS_INDEX[hs6]
                opts = cat.GOODS[gi].en + cat.GOODS[gi].ru
                part_desc = opts[int(rng.integers(0, len(opts)))]
        qty = float(rng.integers(20, 300))
        kg_unit = GOOD_KG_UNIT[HS_INDEX[hs6]] * rng.uniform(0.7, 1.8)
        special.append(_special(rng, hs6, part_desc, qty, kg_unit, rng.uniform(*price)))
    ctx.add(
        "parts_misdeclared",
        net,
        consignee=np.repeat(cnee, n),
        consignor=np.repeat(cnor, n),
        country=country,
        partner=partner,
        mode=modes,
        days=days,
        line_goods=goods,
        line_targets=targets,
        special=special,
        self_declared=None if known is None else known.self_declared,
    )


def ammo_mixed(ctx: Ctx, n: int, net: str) -> None:
    rng = ctx.rng
    country = _home(rng)
    partner = ctx.partner(("CN", "TR", "IR", "AF", "RU", "AE"), (3, 2, 1.5, 1, 1, 1), country)
    cnee, cnor, known = _parties(ctx, country, partner, 0.7)
    if known is not None:
        country, partner = known.country, known.partner
    days = ctx.days_in(n, (90, 400))
    modes = np.array([_pick(rng, ("road", "rail"), (0.8, 0.2)) for _ in range(n)])
    price = (0.6, 1.0) if rng.random() < 0.3 else (0.1, 0.3)
    goods, targets, special = [], [], []
    for _ in range(n):
        g, t = ctx.cover(
            ("household", "textile", "toys_sport", "tools", "plastics"),
            int(rng.integers(6, 21)),
            8000,
        )
        goods.append(g)
        targets.append(t)
        hs6, desc = cat.AMMO_COVER[int(rng.integers(0, len(cat.AMMO_COVER)))]
        gi = HS_INDEX[hs6]
        if cat.GOODS[gi].unit == "KGM":
            qty = float(rng.integers(100, 800))
            special.append(_special(rng, hs6, desc, qty, 1.0, rng.uniform(*price)))
        else:
            qty = float(rng.integers(50, 400))
            kg_unit = GOOD_KG_UNIT[gi] * rng.uniform(1.5, 4)
            special.append(_special(rng, hs6, desc, qty, kg_unit, rng.uniform(*price)))
    ctx.add(
        "ammo_mixed",
        net,
        consignee=np.repeat(cnee, n),
        consignor=np.repeat(cnor, n),
        country=country,
        partner=partner,
        mode=modes,
        days=days,
        line_goods=goods,
        line_targets=targets,
        special=special,
        self_declared=None if known is None else known.self_declared,
    )


def front_company(ctx: Ctx, n: int, net: str) -> None:
    rng = ctx.rng
    country = _home(rng)
    partner = ctx.partner(("TR", "AE", "CN", "IR", "RU"), None, country)
    k = min(n, int(rng.integers(3, 7)))
    cnees = ctx.book.add(np.full(k, country), "company")
    share = rng.random()
    if share < 0.7:
        addr = ctx.book.get(int(cnees[0]), "address")
        ctx.book.set_column(cnees, "address", np.full(k, addr, dtype=object))
    if share > 0.5:
        phone = ctx.book.get(int(cnees[0]), "phone")
        ctx.book.set_column(cnees, "phone", np.full(k, phone, dtype=object))
    cnors = ctx.book.add(np.array([partner, partner]), "company")
    who = np.sort(np.concatenate([np.arange(k), rng.integers(0, k, n - k)]))
    days = ctx.days_in(n, (20, 90))
    modes = np.array([_pick(rng, ("road", "air", "express"), (0.7, 0.1, 0.2)) for _ in range(n)])
    goods, targets, special = [], [], []
    for _ in range(n):
        g, t = ctx.cover(
            ("machinery", "household", "furniture", "auto"), int(rng.integers(1, 5)), 8000
        )
        goods.append(g)
        targets.append(t * rng.uniform(0.6, 1.0))
        special.append((-1, "", 0.0, 0.0, 0.0))
    ctx.add(
        "front_company",
        net,
        consignee=cnees[who],
        consignor=cnors[rng.integers(0, 2, n)],
        country=country,
        partner=partner,
        mode=modes,
        days=days,
        line_goods=goods,
        line_targets=targets,
        special=special,
    )


def licensed_diversion(ctx: Ctx, n: int, net: str) -> None:
    rng = ctx.rng
    tr = ctx.traders
    dealers = np.flatnonzero(tr.dealer)
    if len(dealers) and rng.random() < 0.5:
        d = int(dealers[rng.integers(0, len(dealers))])
        cnee, country, partner = int(tr.party[d]), str(tr.country[d]), str(tr.partner[d])
        cnor = int(tr.consignors[d, 0])
    else:
        country = _home(rng)
        partner = _pick(rng, ("TR", "IT", "RU", "US"))
        cnee = int(ctx.book.add(np.array([country]), "company")[0])
        cnor = int(ctx.book.add(np.array([partner]), "company")[0])
    days = ctx.days_in(n, (180, 540))
    growth = np.linspace(1.0, rng.uniform(2.0, 6.0), n)
    modes = np.array([_pick(rng, ("road", "air"), (0.6, 0.4)) for _ in range(n)])
    dest = np.full(n, country, dtype=object)
    nb = {"KZ": ("KG", "UZ"), "UZ": ("AF", "TJ"), "KG": ("TJ",), "TJ": ("AF",), "TM": ("AF",)}
    onward = rng.random(n) < 0.4
    dest[onward] = [_pick(rng, nb[country]) for _ in range(int(onward.sum()))]
    goods, targets, special = [], [], []
    for i in range(n):
        goods.append(np.array([], dtype=np.int64))
        targets.append(np.array([]))
        hs6 = _pick(rng, ("930320", "930330", "930621", "930630"), (3, 3, 2, 2))
        gi = HS_INDEX[hs6]
        base = 40.0 if cat.GOODS[gi].unit == "PCE" else 400.0
        qty = float(np.round(base * growth[i] * rng.uniform(0.7, 1.3)))
        desc = (cat.GOODS[gi].en + cat.GOODS[gi].ru)[int(rng.integers(0, 2))]
        special.append(_special(rng, hs6, desc, qty, GOOD_KG_UNIT[gi], rng.uniform(0.8, 1.1)))
    ctx.add(
        "licensed_diversion",
        net,
        consignee=np.full(n, cnee),
        consignor=np.full(n, cnor),
        country=country,
        partner=partner,
        mode=modes,
        days=days,
        line_goods=goods,
        line_targets=targets,
        special=special,
        destination=dest,
    )


def postal_split(ctx: Ctx, n: int, net: str) -> None:
    rng = ctx.rng
    country = _home(rng)
    partner = ctx.partner(("CN", "TR", "AE", "PK", "RU"), (3, 2, 1.5, 1, 1), country)
    kind = "company" if rng.random() < 0.6 else "individual"
    cnor = ctx.book.add(np.array([partner]), kind)
    cnees = ctx.book.add(np.full(n, country), "individual", entrepreneur=False, email_share=0.8)
    shared = rng.random(n) < 0.33
    if shared.sum() >= 2:
        phone = ctx.book.get(int(cnees[shared][0]), "phone")
        ctx.book.set_column(cnees[shared], "phone", np.full(int(shared.sum()), phone, dtype=object))
    days = ctx.days_in(n, (14, 45))
    modes = np.where(rng.random(n) < 0.5, "post", "express").astype(object)
    price = (0.15, 0.5) if rng.random() < 0.7 else (0.8, 1.2)  # most declare low values
    goods, targets, special = [], [], []
    for _ in range(n):
        g, t = ctx.cover(("textile", "toys_sport"), int(rng.integers(0, 2)), 30)
        goods.append(g)
        targets.append(t)
        words = cat.POSTAL_WORDED if rng.random() < 0.38 else cat.POSTAL_COVER
        hs6, desc = words[int(rng.integers(0, len(words)))]
        gi = HS_INDEX[hs6]
        qty = float(rng.integers(1, 6)) if cat.GOODS[gi].unit != "KGM" else 1.0
        kg = rng.uniform(0.3, 2.5)
        special.append((gi, desc, qty, kg, float(kg * GOOD_USD_KG[gi] * rng.uniform(*price))))
    ctx.add(
        "postal_split",
        net,
        consignee=cnees,
        consignor=np.repeat(cnor, n),
        country=country,
        partner=partner,
        mode=modes,
        days=days,
        line_goods=goods,
        line_targets=targets,
        special=special,
    )


def courier_traveller(ctx: Ctx, n: int, net: str) -> None:
    rng = ctx.rng
    country = _home(rng)
    partner = ctx.partner(("AF", "PK", "IR", "TR", "AE"), (2, 1, 1.5, 1.5, 1), country)
    individual = rng.random() < 0.6
    cnee_a, cnor, known = _parties(
        ctx,
        country,
        partner,
        0.5,
        kind="individual" if individual else "company",
        individual=individual,
    )
    cnee = int(cnee_a[0])
    if known is not None:
        country = known.country
    days = ctx.days_in(n, (90, 400))
    modes = np.array([_pick(rng, ("road", "air", "express"), (0.6, 0.2, 0.2)) for _ in range(n)])
    goods, targets, special = [], [], []
    for _ in range(n):
        g, t = ctx.cover(("textile", "household", "auto", "food"), int(rng.integers(1, 5)), 6000)
        goods.append(g)
        targets.append(t)
        special.append((-1, "", 0.0, 0.0, 0.0))
    ctx.add(
        "courier_traveller",
        net,
        consignee=np.full(n, cnee),
        consignor=np.repeat(cnor, n),
        country=country,
        partner=partner,
        mode=modes,
        days=days,
        line_goods=goods,
        line_targets=targets,
        special=special,
        self_declared=None if known is None else known.self_declared,
    )
    # The courier(s).
    if individual:
        variant = bool(ctx.book.get(cnee, "uses_variant"))
        kind = "name_variant" if variant else "same_person"
        sur, given = int(ctx.book.get(cnee, "sur")), int(ctx.book.get(cnee, "given"))  # type: ignore[call-overload]
        female = bool(ctx.book.get(cnee, "female"))
    else:
        kind = "phone" if rng.random() < 0.5 else "address"
        sur, given, female = -1, -1, False
    phone = str(ctx.book.get(cnee, "phone"))
    address = str(ctx.book.get(cnee, "address"))
    for d in days:
        lead = int(rng.integers(3, 31))
        dep = ctx.start_us + max(int(d) - lead, 0) * US_PER_DAY + int(rng.integers(0, US_PER_DAY))
        route = cat.COURIER_ROUTES[int(rng.integers(0, len(cat.COURIER_ROUTES)))]
        ctx.trips.append(
            CourierTrip(
                party=cnee,
                link_kind=kind,
                departure_us=dep,
                route=route,
                phone=phone if kind in ("phone", "same_person") else None,
                address=address if kind == "address" else None,
                sur=sur,
                given=given,
                female=female,
            )
        )


def illogical_route(ctx: Ctx, n: int, net: str) -> None:
    rng = ctx.rng
    country = _home(rng)
    partner = _pick(rng, ("CN", "KR", "TR", "DE"), (3, 1, 1.5, 1))
    cnee, cnor, known = _parties(ctx, country, partner, 0.6, partners=("CN", "KR", "TR", "DE"))
    if known is not None:
        country, partner = known.country, known.partner
    days = ctx.days_in(n, (90, 450))
    modes = np.array([_pick(rng, ("road", "rail", "air"), (0.6, 0.2, 0.2)) for _ in range(n)])
    odd = np.array(
        [
            _pick(rng, ("AF", "PK", "IQ", "SY", "IR", "AE"), (3, 2, 1, 1, 1.5, 1.5))
            for _ in range(n)
        ],
        dtype=object,
    )
    origin = np.full(n, partner, dtype=object)
    dispatch = origin.copy()
    third = rng.random(n) < 0.5
    dispatch[third] = [_pick(rng, ("AE", "AF", "IR", "TR")) for _ in range(int(third.sum()))]
    dispatch = np.where(dispatch == origin, "AE", dispatch)
    dispatch = np.where(~third, origin, dispatch)
    goods, targets, special = [], [], []
    for _ in range(n):
        g, t = ctx.cover(
            ("machinery", "toys_sport", "household", "electronics"), int(rng.integers(1, 6)), 9000
        )
        goods.append(g)
        targets.append(t)
        special.append((-1, "", 0.0, 0.0, 0.0))
    ctx.add(
        "illogical_route",
        net,
        consignee=np.repeat(cnee, n),
        consignor=np.repeat(cnor, n),
        country=country,
        partner=partner,
        mode=modes,
        days=days,
        line_goods=goods,
        line_targets=targets,
        special=special,
        origin=origin,
        dispatch=dispatch,
        odd=odd,
        self_declared=None if known is None else known.self_declared,
    )


def dual_use_optics(ctx: Ctx, n: int, net: str) -> None:
    rng = ctx.rng
    country = _home(rng)
    partner = _pick(rng, ("CN", "TR", "AE", "RU"), (3, 1.5, 1.5, 1))
    kind = "company" if rng.random() < 0.5 else "individual"
    cnee, cnor, known = _parties(
        ctx, country, partner, 0.5, kind=kind, individual=kind == "individual"
    )
    if known is not None:
        country, partner = known.country, known.partner
    price = (0.25, 0.5) if rng.random() < 0.35 else (0.05, 0.175)
    days = ctx.days_in(n, (60, 365))
    modes = np.array([_pick(rng, ("express", "air", "post"), (0.5, 0.3, 0.2)) for _ in range(n)])
    goods, targets, special = [], [], []
    for _ in range(n):
        g, t = ctx.cover(("electronics", "optics"), int(rng.integers(0, 3)), 3000)
        goods.append(g)
        targets.append(t)
        hs6, desc = cat.OPTICS_COVER[int(rng.integers(0, len(cat.OPTICS_COVER)))]
        gi = HS_INDEX[hs6]
        qty = float(rng.integers(5, 61))
        special.append(
            _special(
                rng,
                hs6,
                desc,
                qty,
                GOOD_KG_UNIT[gi] * rng.uniform(1.3, 2.5),
                rng.uniform(*price),
            )
        )
    ctx.add(
        "dual_use_optics",
        net,
        consignee=np.repeat(cnee, n),
        consignor=np.repeat(cnor, n),
        country=country,
        partner=partner,
        mode=modes,
        days=days,
        line_goods=goods,
        line_targets=targets,
        special=special,
        self_declared=None if known is None else known.self_declared,
    )


GENERATORS = {
    "parts_misdeclared": parts_misdeclared,
    "ammo_mixed": ammo_mixed,
    "front_company": front_company,
    "licensed_diversion": licensed_diversion,
    "postal_split": postal_split,
    "courier_traveller": courier_traveller,
    "illogical_route": illogical_route,
    "dual_use_optics": dual_use_optics,
}


def plant(ctx: Ctx, counts: dict[str, int]) -> Plan | None:
    """Plant `counts[typology]` shipments per typology, split into networks."""
    for typ in TYPOLOGIES:
        remaining = counts.get(typ, 0)
        lo, hi = NETWORK_SIZE[typ]
        while remaining > 0:
            size = min(remaining, int(ctx.rng.integers(lo, hi + 1)))
            if remaining - size < lo and remaining - size > 0 and remaining <= hi:
                size = remaining
            # a trait of the network, drawn once (on its own stream) like the others
            ctx.displaced = bool(ctx.trait_rng.random() < ctx.displacement_share)
            GENERATORS[typ](ctx, size, ctx.network_id())
            remaining -= size
    if not ctx.ships:
        return None
    return Plan(pl.concat(ctx.ships), pl.concat(ctx.items))
