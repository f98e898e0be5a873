"""API/PNR records: a population of travellers (frequent flyers repeat), shuttle
traders who are also consignees (lawful links by same person, name spelling,
phone or address), and the couriers planted by the courier_traveller typology."""

from __future__ import annotations

import numpy as np
import polars as pl

from data_contracts.schemas import TRAVELLERS
from pipelines.synthetic import catalog as cat
from pipelines.synthetic.lawful import Traders
from pipelines.synthetic.parties import (
    PartyBook,
    addresses,
    birth_days,
    document_numbers,
    emails,
    patronymics,
    phones,
)
from pipelines.synthetic.timeline import US_PER_DAY, sample_days, ser, strs
from pipelines.synthetic.typologies import CourierTrip

NATIONALITY = ("KZ", "UZ", "KG", "TJ", "TM", "RU", "TR", "CN", "AF", "IN", "KR", "DE")
NATIONALITY_P = (0.36, 0.28, 0.12, 0.08, 0.04, 0.05, 0.02, 0.02, 0.01, 0.01, 0.005, 0.005)
PAYMENTS = ("card", "cash", "bank_transfer", "invoice", "miles", "other")
PAYMENTS_P = (0.58, 0.2, 0.08, 0.06, 0.04, 0.04)
UTC = pl.Datetime("us", "UTC")


def _templates() -> tuple[list[tuple[str, ...]], list[str], np.ndarray]:
    routes: list[tuple[str, ...]] = []
    modes: list[str] = []
    weights: list[float] = []
    for r, w in cat.AIR_ROUTES:
        routes += [r, tuple(reversed(r))]
        modes += ["air", "air"]
        weights += [w / 2, w / 2]
    for r, m, w in cat.SURFACE_ROUTES:
        routes += [r, tuple(reversed(r))]
        modes += [m, m]
        weights += [w / 2, w / 2]
    for r in cat.COURIER_ROUTES:
        routes.append(r)
        modes.append("road" if r[0] == "TERMEZ" else "air")
        weights.append(0.15)  # lawful travellers take these journeys too
    wa = np.array(weights)
    return routes, modes, wa / wa.sum()


ROUTES, ROUTE_MODES, ROUTE_P = _templates()
ROUTE_INDEX = {r: i for i, r in enumerate(ROUTES)}
SHUTTLE_ROUTES = [
    ROUTE_INDEX[r]
    for r in (
        ("ALA", "URC"),
        ("TAS", "IST"),
        ("ALA", "IST"),
        ("FRU", "IST"),
        ("TAS", "DXB"),
        ("ALA", "DXB"),
        ("TAS", "ICN"),
        ("DYU", "DXB"),
        ("ALA", "DEL"),
        ("TAS", "KBL"),
        ("TAS", "IKA"),
        ("DYU", "IKA"),
    )
]
SHUTTLE_P = np.array([3, 3, 3, 2, 3, 2, 1, 1, 1, 0.4, 0.3, 0.2])


LAT = np.array([s[0][0] for s in cat.SURNAMES], dtype=object)
LAT_F = np.array([x + "a" if x.endswith(("v", "w")) else x for x in LAT], dtype=object)
CYR = np.array([s[1] for s in cat.SURNAMES], dtype=object)
CYR_F = np.array([x + "а" if x.endswith("в") else x for x in CYR], dtype=object)


def _locators(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    alphabet = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"))
    chars = np.ascontiguousarray(alphabet[rng.integers(0, len(alphabet), (n, k))])
    return chars.view(f"<U{k}").ravel()


def generate_travellers(
    rng: np.random.Generator,
    n_records: int,
    book: PartyBook,
    traders: Traders,
    trips: list[CourierTrip],
    start_us: int,
    day_w: np.ndarray,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Raw travellers (sorted by departure) and traveller_links truth."""
    days = len(day_w)
    parties = book.frame()
    # Lawful linked travellers: shuttle traders (IP) and staff of companies.
    # (established traders only: an occasional importer may never declare anything)
    regular = ~traders.occasional
    ip = np.flatnonzero(traders.individual & regular)
    shuttle = ip[rng.random(len(ip)) < 0.3]
    staff = np.flatnonzero(~traders.individual & regular & (rng.random(len(traders.party)) < 0.03))
    lp = np.concatenate([traders.party[shuttle], traders.party[staff]])
    n_trip_each = rng.integers(2, 9, len(lp))
    link_party = np.repeat(lp, n_trip_each)
    is_ip = np.repeat(
        np.concatenate([np.ones(len(shuttle), bool), np.zeros(len(staff), bool)]), n_trip_each
    )
    # Cap linked trips to a share of all records.
    cap = max(0, n_records // 20)
    link_party, is_ip = link_party[:cap], is_ip[:cap]
    n_link = len(link_party)
    pinfo = parties[link_party]
    staff_kind = np.where(rng.random(n_link) < 0.6, "phone", "address")
    link_kind = np.where(
        is_ip,
        np.where(pinfo["uses_variant"].to_numpy(), "name_variant", "same_person"),
        staff_kind,
    )
    n_courier = len(trips)
    n_gen = max(n_records - n_link - n_courier, 0)
    # Person population.
    n_persons = max(50, n_gen // 3)
    p_sur = rng.integers(0, len(cat.SURNAMES), n_persons)
    p_female = rng.random(n_persons) < 0.4
    p_given = np.where(
        p_female,
        rng.integers(cat.N_MALE_GIVEN, len(cat.GIVEN_NAMES), n_persons),
        rng.integers(0, cat.N_MALE_GIVEN, n_persons),
    )
    weights = (rng.permutation(n_persons) + 1.0) ** -0.8
    who = rng.choice(n_persons, n_gen, p=weights / weights.sum())
    # Assemble all records: generic, linked, couriers.
    n = n_gen + n_link + n_courier
    sur = np.concatenate([p_sur[who], pinfo["sur"].to_numpy(), [t.sur for t in trips]]).astype(int)
    given = np.concatenate(
        [p_given[who], pinfo["given"].to_numpy(), [t.given for t in trips]]
    ).astype(int)
    female = np.concatenate(
        [p_female[who], pinfo["female"].to_numpy(), [t.female for t in trips]]
    ).astype(bool)
    courier_party = np.array([t.party for t in trips], dtype=np.int64)
    cinfo = parties[courier_party]
    father = np.concatenate(
        [
            rng.integers(0, cat.N_MALE_GIVEN, n_persons)[who],
            pinfo["father"].to_numpy(),
            cinfo["father"].to_numpy(),
        ]
    ).astype(int)
    # Staff and courier associates are other people.
    anon = sur < 0
    sur[anon] = rng.integers(0, len(cat.SURNAMES), int(anon.sum()))
    given[anon] = rng.integers(0, cat.N_MALE_GIVEN, int(anon.sum()))
    staff_m = np.zeros(n, dtype=bool)
    staff_m[n_gen : n_gen + n_link] = ~is_ip
    sur[staff_m] = rng.integers(0, len(cat.SURNAMES), int(staff_m.sum()))
    other = anon | staff_m
    father[other] = rng.integers(0, cat.N_MALE_GIVEN, int(other.sum()))
    # Records of a party travelling himself: his own date of birth and passport.
    self_m = np.zeros(n, dtype=bool)
    self_m[n_gen : n_gen + n_link] = is_ip
    self_m[n_gen + n_link :] = ~anon[n_gen + n_link :]
    person = np.concatenate([who, n_persons + np.arange(n_link + n_courier)])
    # Person-level attributes (by person id so frequent flyers stay consistent).
    n_pid = n_persons + n_link + n_courier
    home = np.array(NATIONALITY, dtype=object)
    nat_p = home[rng.choice(len(home), n_pid, p=np.array(NATIONALITY_P))]
    nat_p[n_persons:] = np.concatenate(
        [pinfo["country"].to_numpy(), [str(parties["country"][t.party]) for t in trips]]
    )
    dob_p = birth_days(rng, n_pid)
    doc_p = document_numbers(rng, nat_p)
    patr_in_latin_p = rng.random(n_pid) < 0.3  # passports that print the patronymic
    phone_p = phones(rng, nat_p)
    nationality = nat_p[person]
    dob = dob_p[person]
    doc = doc_p[person]
    own = pl.concat([pinfo, cinfo]).select(
        pl.col("dob").cast(pl.Int32).cast(pl.Int64), "passport", "email"
    )
    self_own = self_m[n_gen:]
    dob[n_gen:][self_own] = own["dob"].to_numpy()[self_own]
    doc[n_gen:][self_own] = own["passport"].to_numpy()[self_own]
    lat = np.where(female, LAT_F[sur], LAT[sur])
    cyr = np.where(female, CYR_F[sur], CYR[sur])
    g_lat = np.array([g for g, _ in cat.GIVEN_NAMES], dtype=object)[given]
    g_cyr = np.array([g for _, g in cat.GIVEN_NAMES], dtype=object)[given]
    f_lat, f_cyr = patronymics(father, female)
    surname = strs(lat).str.to_uppercase()
    with_patr = patr_in_latin_p[person]
    given_names = strs(np.where(with_patr, g_lat + " " + f_lat, g_lat)).str.to_uppercase()
    native = (strs(cyr) + " " + strs(g_cyr) + " " + strs(f_cyr)).set(ser(rng.random(n) < 0.2), None)
    # Contacts.
    phone = phone_p[person].astype(object)
    phone[rng.random(n) < 0.3] = None
    addr = np.full(n, None, dtype=object)
    has_addr = rng.random(n) < 0.25
    addr[has_addr] = addresses(rng, nationality[has_addr], rng.random(int(has_addr.sum())) < 0.6)
    email = emails(rng, lat, 0.45)
    # A trader travelling himself books with his business e-mail now and then.
    own_email = own["email"].to_numpy().astype(object)
    use_own = self_own & (rng.random(len(self_own)) < 0.3) & (own_email != None)  # noqa: E711
    email[n_gen:][use_own] = own_email[use_own]
    lk = slice(n_gen, n_gen + n_link)
    l_phone = pinfo["phone"].to_numpy().astype(object)
    l_addr = pinfo["address"].to_numpy().astype(object)
    phone[lk] = np.where(np.isin(link_kind, ["phone", "same_person"]), l_phone, phone[lk])
    addr[lk] = np.where(link_kind == "address", l_addr, addr[lk])
    ck = slice(n_gen + n_link, n)
    phone[ck] = [
        t.phone if t.phone is not None else p for t, p in zip(trips, phone[ck], strict=True)
    ]
    addr[ck] = [
        t.address if t.address is not None else a for t, a in zip(trips, addr[ck], strict=True)
    ]
    # Journeys.
    route = rng.choice(len(ROUTES), n, p=ROUTE_P)
    route[lk] = np.array(SHUTTLE_ROUTES)[
        rng.choice(len(SHUTTLE_ROUTES), n_link, p=SHUTTLE_P / SHUTTLE_P.sum())
    ]
    route[ck] = [ROUTE_INDEX[t.route] for t in trips]
    day = sample_days(rng, day_w, np.zeros(n, dtype=np.int64), np.full(n, days))
    dep = start_us + day * US_PER_DAY + rng.integers(0, US_PER_DAY, n)
    dep[ck] = [t.departure_us for t in trips]
    lead_days = np.exp(rng.normal(np.log(14), 1.0, n))
    lead_days[ck] = rng.uniform(0.1, 3.0, n_courier)
    booked = dep - (lead_days * US_PER_DAY).astype(np.int64)
    # Booking groups share journey and time.
    in_group = rng.random(n_gen) < 0.12
    gpos = np.flatnonzero(in_group)
    group = np.full(n, None, dtype=object)
    if len(gpos) > 1:
        sizes = rng.integers(2, 6, len(gpos))
        starts = np.cumsum(np.concatenate([[0], sizes[:-1]]))
        starts = starts[starts < len(gpos)]
        gid = np.searchsorted(starts, np.arange(len(gpos)), side="right") - 1
        leader = gpos[starts[gid]]
        route[gpos] = route[leader]
        dep[gpos] = dep[leader]
        booked[gpos] = booked[leader]
        group[gpos] = np.char.add("G", _locators(rng, len(starts), 8))[gid]
    one_way = rng.random(n) < 0.35
    one_way[ck] = rng.random(n_courier) < 0.6
    pay = np.array(PAYMENTS, dtype=object)[rng.choice(len(PAYMENTS), n, p=np.array(PAYMENTS_P))]
    pay[rng.random(n) < 0.05] = None
    pay[ck] = np.where(rng.random(n_courier) < 0.6, "cash", pay[ck])
    mode = np.array(ROUTE_MODES, dtype=object)[route]
    carrier = np.array(cat.AIR_CARRIER_CODES, dtype=object)[
        rng.integers(0, len(cat.AIR_CARRIER_CODES), n)
    ]
    carrier = np.where(mode == "rail", "KTZ", np.where(mode == "road", None, carrier))  # type: ignore[call-overload]
    agency = np.array(cat.AGENCIES, dtype=object)[rng.integers(0, len(cat.AGENCIES), n)]
    agency[rng.random(n) < 0.55] = None
    pieces = rng.integers(0, 4, n)
    bag_kg = np.round(pieces * rng.uniform(8, 23, n), 1)
    no_bag = rng.random(n) < 0.1
    booked_s = ser(booked).cast(UTC).set(ser(rng.random(n) < 0.05), None)
    doc_type = np.where(
        rng.random(n) < 0.93,
        "passport",
        np.where(rng.random(n) < 0.85, "id_card", "travel_document"),
    )
    doc_country = nationality.copy()
    route_s = ser([list(r) for r in ROUTES], dtype=pl.List(pl.String))
    countries_s = ser([[cat.PORT_COUNTRY[p] for p in r] for r in ROUTES], dtype=pl.List(pl.String))
    pnr = _locators(rng, n, 6).astype(object)
    pnr[mode != "air"] = None
    frame = pl.DataFrame(
        {
            "pnr_locator": ser(pnr, dtype=pl.String),
            "surname": surname,
            "given_names": given_names,
            "name_native": native,
            "date_of_birth": ser(dob).cast(pl.Int32).cast(pl.Date),
            "nationality": strs(nationality),
            "document_type": ser(doc_type),
            "document_number": strs(doc),
            "document_country": strs(doc_country),
            "booked_at": booked_s,
            "departure_at": ser(dep).cast(UTC),
            "route": route_s.gather(route),
            "route_countries": countries_s.gather(route),
            "mode": strs(mode),
            "carrier_code": ser(carrier, dtype=pl.String),
            "one_way": ser(one_way),
            "payment_form": ser(pay, dtype=pl.String),
            "travel_agency": ser(agency, dtype=pl.String),
            "contact_phone": ser(phone, dtype=pl.String),
            "contact_email": ser(email, dtype=pl.String),
            "contact_address": ser(addr, dtype=pl.String),
            "baggage_pieces": ser(pieces).set(ser(no_bag), None),
            "baggage_kg": ser(bag_kg).set(ser(no_bag), None),
            "group_id": ser(group, dtype=pl.String),
            "_party": np.concatenate(
                [np.full(n_gen, -1), link_party, [t.party for t in trips]]
            ).astype(np.int64),
            "_kind": ser(
                np.concatenate([np.full(n_gen, None), link_kind, [t.link_kind for t in trips]]),
                dtype=pl.String,
            ),
            "_order": np.arange(n),
        }
    )
    frame = frame.sort("departure_at", "_order").with_columns(
        pl.format("TR{}", pl.int_range(1, pl.len() + 1).cast(pl.String).str.zfill(10)).alias(
            "traveller_record_id"
        )
    )
    keys = parties["party_key"]
    linked = frame.filter(pl.col("_party") >= 0)
    links = pl.DataFrame(
        {
            "traveller_record_id": linked["traveller_record_id"],
            "party_key": keys.gather(linked["_party"]),
            "link_kind": linked["_kind"],
        }
    )
    raw = frame.select([pl.col(c).cast(t) for c, t in TRAVELLERS.raw_schema.items()])
    return raw, links
