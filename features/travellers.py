"""Family 5: travellers (API/PNR) linked to the shipment's parties.

Entity resolution (`link_travellers`) compares each traveller record with each
party mention through blocking keys, never the full cross product:

* phone (last 10 digits) and e-mail (lower case): exact join;
* address: exact join on the normalised key (`features.network.address_key`),
  then, within blocks of addresses carrying the same house / office numbers in
  the same order, rapidfuzz `ratio` >= `ADDRESS_MIN_SCORE`;
* name: the party's name key (`features.names.normalise_name`, tokens sorted,
  company forms such as IP / ИП dropped) equals the traveller's Latin
  "surname given names" key or native-script key, or the initial form
  ("Абдуллаев А." = "abdulaev a"); a pair already linked by a contact is
  also confirmed by a close name (rapidfuzz `ratio` >= `NAME_MIN_SCORE`).

A pair's evidence decides its kind and confidence (`CONFIDENCE`):

* `same_person`: the name matches and a phone, e-mail or address confirms it;
* `phone`: only a phone or e-mail is shared (a director, an employee, a
  courier using the company's number);
* `address`: only the address is shared;
* a phone or address alone links strongly only to a company (a name with a
  company form); a phone that parties of other names declare too links to
  each of them a little less surely, such an address only weakly; with a
  natural person under another name a phone or address stays weak (below the
  features' threshold);
* `name_variant`: only the full name matches (across scripts and spellings).
  A name alone identifies nobody when namesakes exist, so such a link is made
  only when the name belongs to at most `MAX_NAMESAKES` distinct travellers
  (by document number) in the records given, and it is not used by the
  shipment features (its meaning would change as namesakes appear later).

Features of a shipment declared at t use the links of its own three parties
(their names and contacts as declared on it) to records that departed before t;
trips count within `WINDOW` before t. Nationality is a protected trait and is
never read.

A few parties (`SMALL_MAX_PARTIES`: an online call holds one shipment, three
parties) are linked, and their shipments' features counted, in Python over the
records the index finds (`_link_few`, `_prepare_few`), by the same rules
(`_link_rules`): the frame operations' values without their fixed cost per call.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, NamedTuple

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process

from features.context import PARTY_ROLES, History, Params
from features.names import COMPANY_FORMS, names_agree, normalise_name, normalise_names, to_latin
from features.network import (
    CONTACTS,
    _email_ascii,
    _phone_ascii,
    address_key,
    email_key,
    keys_of,
    phone_key,
)
from features.network import mentions as network_mentions
from features.registry import Family, Wording, feature
from features.timeline import FirstSeen, distinct_query, pair_seen_query

F = Family.TRAVELLER
WINDOW = dt.timedelta(days=180)
LAST_MINUTE = dt.timedelta(hours=72)
ADDRESS_MIN_SCORE = 95
NAME_MIN_SCORE = 85
MAX_NAMESAKES = 1
# Links below this confidence are not used by the shipment features.
FEATURE_MIN_CONFIDENCE = 0.7

LINK_KINDS = ("same_person", "phone", "address", "name_variant")
SHARED_FLAGS = ("phone_shared", "email_shared", "address_shared")
CONFIDENCE = {
    # The identity document a natural person declared is the one he travels on.
    "document": 0.99,
    "name_phone": 0.99,  # full name + phone
    # Born the same day, names agreeing token by token (spelling, script,
    # patronymic or initials aside).
    "birth_name": 0.97,
    "initial_phone": 0.95,  # initials + phone
    "name_address": 0.95,  # full name or initials + address
    "phone": 0.9,  # phone only (a company's number)
    # A private person's or sole trader's phone or address in the booking of
    # somebody else: a relative, a neighbour, or chance (numbers and flats are
    # reused), not enough alone.
    "person_contact": 0.6,
    "address_exact": 0.85,
    "address_fuzzy": 0.75,
    "name_only": 0.6,
    # Mailbox names are made of surnames and short numbers, so namesakes collide
    # (seen in the synthetic world: same name, same e-mail, different phones):
    # an e-mail confirms a name only weakly and alone it is weaker still.
    "name_email": 0.65,
    # A phone that parties of different names declare (a network's shared
    # number): the traveller is linked to each of them, a little less surely.
    "shared_phone": 0.8,
    # An address that parties of different names declare (a business centre, a
    # registration address): too common to link by itself.
    "shared_address": 0.6,
    "email": 0.5,
}
LINK_SCHEMA = pl.Schema(
    {
        "traveller_record_id": pl.String(),
        "party_key": pl.String(),
        "link_kind": pl.String(),
        "confidence": pl.Float64(),
    }
)


def shipment_parties(ships: pl.DataFrame) -> pl.DataFrame:
    """One row per (shipment, role): shipment_id, role, party_key (the
    `<role>_key` column), name, phone, email, address, as declared."""
    return pl.concat(
        [
            ships.select(
                "shipment_id",
                pl.lit(role).alias("role"),
                pl.col(f"{role}_key").cast(pl.String).alias("party_key"),
                *[
                    pl.col(f"{role}_{c}").cast(pl.String).alias(c)
                    for c in ("name", "phone", "email", "address")
                ],
                *_identity(ships, role),
            )
            for role in PARTY_ROLES
        ]
    )


IDENTITY = ("birth_date", "document_number")


def _identity(ships: pl.DataFrame, role: str) -> list[pl.Expr]:
    """A natural person's date of birth and identity document as declared for
    `role` (null when the data set has no such column)."""
    out = []
    for c, dtype in (("birth_date", pl.Date()), ("document_number", pl.String())):
        col = f"{role}_{c}"
        expr = pl.col(col).cast(dtype) if col in ships.columns else pl.lit(None, dtype=dtype)
        out.append(expr.alias(c))
    return out


def document_key(expr: pl.Expr) -> pl.Expr:
    """Comparison key of an identity document number: upper-case letters and
    digits only; null when fewer than 5 remain."""
    key = expr.cast(pl.String).str.to_uppercase().str.replace_all(r"[^0-9A-Z]", "")
    return pl.when(key.str.len_chars() >= 5).then(key)


def _traveller_keys(travellers: pl.DataFrame) -> pl.DataFrame:
    """The records' comparison keys (`_Record`), row for row."""
    full = pl.concat_str(
        [pl.col("surname"), pl.col("given_names").fill_null("")], separator=" "
    ).str.strip_chars()
    t = travellers.select(
        pl.col("traveller_record_id").alias("rec"),
        full.alias("__full"),
        pl.col("surname").alias("__sur"),
        pl.col("given_names").alias("__given"),
        pl.col("name_native").alias("__native"),
        pl.coalesce(
            pl.concat_str([pl.col("document_country"), pl.col("document_number")], separator=":"),
            full,
        ).alias("person"),
        phone_key(pl.col("contact_phone")).alias("phone"),
        email_key(pl.col("contact_email")).alias("email"),
        pl.col("date_of_birth").alias("dob"),
        document_key(pl.col("document_number")).alias("doc"),
    )
    sur = normalise_names(t["__sur"])
    given = normalise_names(t["__given"])
    initials = pl.select(
        pl.when(given.str.len_chars() > 0)
        .then(
            pl.concat_list(sur.str.split(" "), pl.lit(given.str.slice(0, 1)))
            .list.sort()
            .list.join(" ")
        )
        .alias("initials")
    ).to_series()
    return t.with_columns(
        normalise_names(t["__full"], sort_tokens=True).alias("name"),
        normalise_names(t["__native"], sort_tokens=True).alias("native"),
        initials,
        address_key(travellers["contact_address"]).alias("address"),
    ).select(_Record._fields)


class _Record(NamedTuple):
    """A row of `_traveller_keys`: a traveller record's comparison keys."""

    rec: str
    person: str | None
    name: str | None
    native: str | None
    initials: str | None
    phone: str | None
    email: str | None
    address: str | None
    dob: dt.date | None
    doc: str | None


_PERSON_FORMS = frozenset({"ip", "chp"})  # ИП, ЧП: a sole trader is a person
_TOKEN = re.compile(r"[a-z0-9]+")


def is_company_name(name: str) -> bool:
    """Whether a party's name carries a company form (LLC, ТОО, Co. Ltd...);
    sole traders (ИП / IP) and bare personal names are natural persons."""
    tokens = set(_TOKEN.findall(to_latin(name).replace(".", "").replace("'", "")))
    return bool(tokens & (COMPANY_FORMS - _PERSON_FORMS))


def _party_keys(parties: pl.DataFrame) -> pl.DataFrame:
    """The parties' comparison keys, one row per distinct mention, in the order of
    `_Party`: party_key, company, name, phone, email, address, dob, doc and the
    `SHARED_FLAGS` (those not given: whether parties of more than one name
    among `parties` declare the value)."""
    flags = [c for c in SHARED_FLAGS if c in parties.columns]
    ident = [
        (pl.col(c) if c in parties.columns else pl.lit(None)).cast(dtype).alias(c)
        for c, dtype in (("birth_date", pl.Date()), ("document_number", pl.String()))
    ]
    p = parties.select("party_key", "name", "phone", "email", "address", *ident, *flags).unique()
    names = p["name"].cast(pl.String)
    distinct = names.drop_nulls().unique().to_list()
    company = names.replace_strict(
        distinct, [is_company_name(v) for v in distinct], default=False, return_dtype=pl.Boolean
    )
    keyed = pl.DataFrame(
        {
            "party_key": p["party_key"],
            "company": company,
            "name": normalise_names(p["name"], sort_tokens=True),
            "phone": p.select(phone_key(pl.col("phone"))).to_series(),
            "email": p.select(email_key(pl.col("email"))).to_series(),
            "address": address_key(p["address"]),
            "dob": p["birth_date"],
            "doc": p.select(document_key(pl.col("document_number"))).to_series(),
            **{c: p[c] for c in flags},
        }
    ).filter(pl.col("party_key").is_not_null())
    return keyed.select(
        *_Party._fields[: -len(SHARED_FLAGS)],
        *[
            pl.col(flag) if flag in flags else (pl.col("name").n_unique().over(on) > 1).alias(flag)
            for on, flag in zip(CONTACTS, SHARED_FLAGS, strict=True)
        ],
    )


# Parties at most this many get their comparison keys in Python (`_party_keys_few`):
# `_party_keys`' values without the fixed cost of its frame operations (some
# milliseconds for the API's one shipment, three parties).
SMALL_KEYS = 96
_PARTY_COLUMNS = ("party_key", "name", "phone", "email", "address", *IDENTITY)
_PARTY_DTYPES: dict[str, pl.DataType] = {
    **{c: pl.String() for c in ("name", "phone", "email", "address", "document_number")},
    "birth_date": pl.Date(),
}
_NOT_DOCUMENT = re.compile(r"[^0-9A-Z]")


def _document_ascii(number: str) -> str | None:
    """`document_key` of an ASCII string."""
    key = _NOT_DOCUMENT.sub("", number.upper())
    return key if len(key) >= 5 else None


def _party_rows(parties: pl.DataFrame) -> tuple[list[tuple[Any, ...]], tuple[str, ...]]:
    """The columns `_party_keys` reads of `parties`, row by row (party_key, name,
    phone, email, address, birth_date, document_number, then the `SHARED_FLAGS`
    given), as it casts them; and the names of the flags given."""
    flags = tuple(c for c in SHARED_FLAGS if c in parties.columns)
    columns = []
    for c in (*_PARTY_COLUMNS, *flags):
        if c not in parties.columns:
            columns.append([None] * parties.height)
            continue
        values = parties.get_column(c)
        dtype = _PARTY_DTYPES.get(c)
        if dtype is not None and values.dtype != dtype:
            values = values.cast(dtype)
        columns.append(values.to_list())
    return list(zip(*columns, strict=True)), flags


def _party_keys_few(rows: list[tuple[Any, ...]], flags: tuple[str, ...] = ()) -> list[_Party]:
    """`_party_keys` of a few parties, in Python: `rows` as `_party_rows` gives them
    (raw values; name, phone, e-mail, address and document as strings, the birth
    date as a date; then the `flags` given, of `SHARED_FLAGS`). The same rows (one
    per distinct mention with a party key), in no particular order, as the frame's
    are in none. Keys of ASCII strings are computed in Python, others through the
    expressions (`features.network.keys_of`)."""
    distinct = [row for row in dict.fromkeys(rows) if row[0] is not None]
    names_raw = [row[1] for row in distinct]
    company = [raw is not None and is_company_name(raw) for raw in names_raw]
    names = [None if raw is None else normalise_name(raw, sort_tokens=True) for raw in names_raw]
    phones = keys_of([row[2] for row in distinct], phone_key, _phone_ascii)
    emails = keys_of([row[3] for row in distinct], email_key, _email_ascii)
    addresses = [None if row[4] is None else (normalise_name(row[4]) or None) for row in distinct]
    docs = keys_of([row[6] for row in distinct], document_key, _document_ascii)
    given = {flag: [row[7 + i] for row in distinct] for i, flag in enumerate(flags)}
    shared = []
    for flag, keys in zip(SHARED_FLAGS, (phones, emails, addresses), strict=True):
        if flag in given:
            shared.append(given[flag])
            continue
        # Whether more than one name (a missing one counts, as Polars' `n_unique`
        # counts it) declares the value (a missing value too: one group, as `over`).
        seen: dict[Any, set[str | None]] = {}
        for key, name in zip(keys, names, strict=True):
            seen.setdefault(key, set()).add(name)
        shared.append([len(seen[key]) > 1 for key in keys])
    columns = (company, names, phones, emails, addresses, docs, *shared)
    return [
        _Party(row[0], is_company, name, phone, email, address, row[5], doc, *flag_values)
        for row, (is_company, name, phone, email, address, doc, *flag_values) in zip(
            distinct, zip(*columns, strict=True), strict=True
        )
    ]


class _Party(NamedTuple):
    """A row of `_party_keys`: a party mention's comparison keys."""

    party_key: Any
    company: bool
    name: str | None
    phone: str | None
    email: str | None
    address: str | None
    dob: dt.date | None
    doc: str | None
    phone_shared: bool | None
    email_shared: bool | None
    address_shared: bool | None


# Exact contact matches: the `_Party` field compared and the evidence it gives
# (with a `_shared` suffix when the party's `<field>_shared` flag is set).
EXACT_EVIDENCE = (("phone", "phone"), ("email", "email"), ("address", "address_exact"))


def _pairs(left: pl.DataFrame, right: pl.DataFrame, on: str, evidence: str) -> pl.DataFrame:
    """Exact matches on `on` (see `EXACT_EVIDENCE`)."""
    a = (
        left.drop_nulls(on)
        .filter(pl.col(on) != "")
        .select("party_key", on, pl.col(f"{on}_shared").fill_null(False).alias("__shared"))
        .unique()
    )
    b = right.select("rec", on).drop_nulls().filter(pl.col(on) != "")
    return a.join(b, on=on).select(
        "rec",
        "party_key",
        pl.when(pl.col("__shared"))
        .then(pl.lit(f"{evidence}_shared"))
        .otherwise(pl.lit(evidence))
        .alias("evidence"),
    )


def _number_block(key: pl.Expr) -> pl.Expr:
    """The house / office numbers of an address key, in order."""
    return key.str.extract_all(r"\b\d+\b").list.join(" ")


_NUMBER = re.compile(r"\b\d+\b", re.ASCII)


def _number_block_ascii(key: str) -> str:
    """`_number_block` of an ASCII key (`features.network.keys_of`)."""
    return " ".join(_NUMBER.findall(key))


def _fuzzy_addresses(p: pl.DataFrame, t: pl.DataFrame) -> pl.DataFrame:
    """Pairs whose addresses share house/office numbers and score >= ADDRESS_MIN_SCORE."""
    a = (
        p.select("party_key", "address")
        .drop_nulls()
        .unique()
        .with_columns(_number_block(pl.col("address")).alias("block"))
    )
    b = (
        t.select("rec", pl.col("address").alias("t_address"))
        .drop_nulls()
        .with_columns(_number_block(pl.col("t_address")).alias("block"))
    )
    cand = (
        a.filter(pl.col("block") != "")
        .join(b, on="block")
        .filter(pl.col("address") != pl.col("t_address"))
    )
    if cand.height == 0:
        return pl.DataFrame(
            schema={"rec": pl.String, "party_key": pl.String, "evidence": pl.String}
        )
    scores = process.cpdist(
        cand["address"].to_list(),
        cand["t_address"].to_list(),
        scorer=fuzz.ratio,
        workers=-1,
        dtype=np.float64,
    )
    return cand.filter(pl.Series(scores >= ADDRESS_MIN_SCORE)).select(
        "rec", "party_key", pl.lit("address_fuzzy").alias("evidence")
    )


def _identity_pairs(p: pl.DataFrame, t: pl.DataFrame) -> pl.DataFrame:
    """Pairs sharing the identity document number whose names agree or who
    were born the same day (`document`: a number alone may be mistyped or
    reused across countries), and pairs born the same day whose names agree
    with at least two full words (`birth_name`; initials alone are too weak a
    confirmation among the many people born on any day). The traveller's name
    is compared in its fullest form (native script with patronymic, when
    given), so that differing patronymics tell namesakes apart."""
    doc = (
        p.select("party_key", "doc", "dob", pl.col("name").alias("p_name"))
        .filter(pl.col("doc").is_not_null())
        .unique()
        .join(
            t.select("rec", "doc", pl.col("dob").alias("t_dob"), "name", "native"),
            on="doc",
        )
    )
    doc_ok = [
        _document_agrees(a, pd, b, c, td)
        for a, b, c, pd, td in zip(
            doc["p_name"].to_list(),
            doc["name"].to_list(),
            doc["native"].to_list(),
            doc["dob"].to_list(),
            doc["t_dob"].to_list(),
            strict=True,
        )
    ]
    born = (
        p.select("party_key", "dob", pl.col("name").alias("p_name"))
        .drop_nulls()
        .filter(pl.col("p_name") != "")
        .unique()
        .join(t.select("rec", "dob", "name", "native").drop_nulls("dob"), on="dob")
    )
    agree = [
        _birth_agrees(a, b, c)
        for a, b, c in zip(
            born["p_name"].to_list(),
            born["name"].to_list(),
            born["native"].to_list(),
            strict=True,
        )
    ]
    return pl.concat(
        [
            doc.filter(pl.Series(doc_ok, dtype=pl.Boolean)).select(
                "rec", "party_key", pl.lit("document").alias("evidence")
            ),
            born.filter(pl.Series(agree, dtype=pl.Boolean)).select(
                "rec", "party_key", pl.lit("birth_name").alias("evidence")
            ),
        ]
    )


def _document_agrees(
    p_name: str | None,
    p_dob: dt.date | None,
    name: str | None,
    native: str | None,
    dob: dt.date | None,
) -> bool:
    """Whether a party and a record sharing a document number are one person
    (`_identity_pairs`): born the same day, or the names agree."""
    return (
        (p_dob is not None and p_dob == dob)
        or names_agree(p_name or "", name or "")
        or names_agree(p_name or "", native or "")
    )


def _birth_agrees(p_name: str, name: str | None, native: str | None) -> bool:
    """Whether a party and a record born the same day are one person
    (`_identity_pairs`): the names agree with at least two full words, the
    record's fullest name (native) compared."""
    return names_agree(p_name, native if native else (name or ""), 2)


class RowsBy:
    """A value -> the rows holding it (ascending), from a frame of the distinct
    values of `col` and their rows (a list column `__i`, ascending: a group-by
    keeps the rows' order): one array of every row, in value order, and per value
    where its rows start in it. (A Python list per value cost 2.6 s for the eight
    blocking keys of 1.2 million records, this 0.7 s.)"""

    __slots__ = ("_position", "_rows", "_starts")

    def __init__(self, grouped: pl.DataFrame, col: str) -> None:
        values = grouped.get_column(col).to_list()
        self._position = dict(zip(values, range(len(values)), strict=True))
        self._rows = grouped.get_column("__i").explode().to_numpy()
        lengths = grouped.get_column("__i").list.len().to_numpy()
        self._starts = np.concatenate(
            [np.zeros(1, dtype=np.int64), np.cumsum(lengths, dtype=np.int64)]
        )

    def __len__(self) -> int:
        return len(self._position)

    def __contains__(self, value: object) -> bool:
        return value in self._position

    def rows(self, value: Any) -> list[int]:
        """The rows holding `value` (ascending; none: empty)."""
        at = self._position.get(value)
        if at is None:
            return []
        rows: list[int] = self._rows[self._starts[at] : self._starts[at + 1]].tolist()
        return rows


class TravellerIndex:
    """The traveller records' comparison keys (`_traveller_keys`), the name keys
    no namesake shares, and hash indexes value -> rows on every blocking key, so
    that a few parties are compared only with the records sharing a key with them
    (the same links as against all records)."""

    BLOCKING = ("phone", "email", "address", "block", "name", "native", "doc", "dob")

    def __init__(self, travellers: pl.DataFrame):
        self.travellers = travellers
        self.keys = _traveller_keys(travellers)
        self.unique_keys = _unique_name_keys(self.keys)
        self.unique_names = frozenset(self.unique_keys.get_column("key").to_list())
        self._index: dict[str, RowsBy] | None = None

    def index(self) -> dict[str, RowsBy]:
        """Per blocking key column, its values and the rows holding each."""
        if self._index is None:
            frame = self.keys.with_columns(
                _number_block(pl.col("address")).alias("block")
            ).with_row_index("__i")
            self._index = {}
            for col in self.BLOCKING:
                values = frame.select(col, "__i").drop_nulls()
                if values.schema[col] == pl.String:
                    values = values.filter(pl.col(col) != "")
                self._index[col] = RowsBy(values.group_by(col).agg("__i"), col)
        return self._index

    def rows_sharing(self, values: dict[str, list[Any]]) -> list[int]:
        """The rows (ascending) of the records whose blocking key `col` is one of
        `values[col]` (nulls ignored), the `native` key looked up with `values["name"]`."""
        index = self.index()
        rows: set[int] = set()
        for col in self.BLOCKING:
            lookup = index[col]
            for value in values["name" if col == "native" else col]:
                if value is not None:
                    rows.update(lookup.rows(value))
        return sorted(rows)

    def candidates(self, p: pl.DataFrame) -> pl.DataFrame:
        """The records sharing a blocking key with the parties `p` (`_party_keys`)."""
        if p.height > RESTRICT_MAX_PARTIES:
            return self.keys
        p = p.with_columns(_number_block(pl.col("address")).alias("block"))
        wanted = [c for c in self.BLOCKING if c != "native"]
        return self.keys[self.rows_sharing({c: p.get_column(c).to_list() for c in wanted})]

    def may_link(self, keyed: pl.DataFrame) -> bool:
        """Whether a record shares with one of the party mentions `keyed` (the
        `phone` and `address` comparison keys of `features.network.mentions`;
        no identity document) evidence from which a link can reach
        `FEATURE_MIN_CONFIDENCE`: a phone, an address, or an address close
        enough (`_fuzzy_addresses`). Without a document or a birth date, an
        e-mail or a name alone stays below it (`CONFIDENCE`). False: the features
        see no link (what `prepare` would compute, without linking)."""
        index = self.index()
        if any(p in index["phone"] for p in keyed.get_column("phone").to_list()):
            return True
        addresses = keyed.get_column("address").to_list()
        if all(a is None for a in addresses):
            return False
        blocks = keys_of(addresses, _number_block, _number_block_ascii)
        for address, block in zip(addresses, blocks, strict=True):
            if address is None:
                continue
            if address in index["address"]:
                return True
            rows = index["block"].rows(block) if block else None
            if rows:
                held = self.keys.get_column("address").gather(rows).to_list()
                if any(
                    other is not None
                    and other != address
                    and fuzz.ratio(address, other) >= ADDRESS_MIN_SCORE
                    for other in held
                ):
                    return True
        return False


# Without a document or a birth date, these evidences alone stay below the
# features' threshold (`TravellerIndex.may_link` relies on it).
assert max(CONFIDENCE["email"], CONFIDENCE["name_email"], CONFIDENCE["name_only"]) < (
    FEATURE_MIN_CONFIDENCE
)

# Parties at most this many: compare them with the records found through the index.
RESTRICT_MAX_PARTIES = 256


def _unique_name_keys(t: pl.DataFrame) -> pl.DataFrame:
    """Name keys (Latin or native) borne by at most `MAX_NAMESAKES` persons."""
    keys = t.select("rec", "person", pl.concat_list("name", "native").alias("key")).explode("key")
    keys = keys.drop_nulls("key").filter(pl.col("key") != "")
    return (
        keys.group_by("key")
        .agg(pl.col("person").n_unique().alias("persons"))
        .filter(pl.col("persons") <= MAX_NAMESAKES)
    )


# Parties at most this many are linked in Python (`_link_few`), and shipments
# whose parties are at most this many get their features in Python
# (`_prepare_few`): the frame operations' values without their fixed cost per
# call (an online call holds one shipment, three parties).
SMALL_MAX_PARTIES = 96

# A linked pair's evidence flags, each set by any of these evidences (`_pairs`,
# `_fuzzy_addresses`, `_identity_pairs`).
EVIDENCE_FLAGS: dict[str, tuple[str, ...]] = {
    "document": ("document",),
    "birth": ("birth_name",),
    "phone": ("phone",),
    "phone_shared": ("phone_shared",),
    "email": ("email", "email_shared"),
    "addr_exact": ("address_exact",),
    "addr_shared": ("address_exact_shared",),
    "addr_fuzzy": ("address_fuzzy",),
}
# A pair is linked when one of these holds (a close name, "initial", only confirms).
_LINKING = (*EVIDENCE_FLAGS, "name")

_Cases = tuple[list[tuple[Any, Any]], Any]


def _link_rules(f: dict[str, Any]) -> tuple[_Cases, _Cases]:
    """The link kind and the confidence of a pair: each the value of the first
    case whose condition holds, else the default. `f`: the pair's flags
    (`EVIDENCE_FLAGS`, `name`: the full name matches, `initial`: the initials or a
    close spelling do, `person`: the party is no company), as Polars expressions
    (the frame path) or Python bools (`_link_few`): one rule for both."""
    c = CONFIDENCE
    phone = f["phone"] | f["phone_shared"]
    addr = f["addr_exact"] | f["addr_shared"] | f["addr_fuzzy"]
    any_name = f["name"] | f["initial"]
    contact = phone | f["email"]
    identity = f["document"] | f["birth"]
    kind = [
        (identity | (any_name & (contact | addr)), "same_person"),
        (contact, "phone"),
        (addr, "address"),
    ]
    confidence = [
        (f["document"], c["document"]),
        (f["name"] & phone, c["name_phone"]),
        (f["birth"], c["birth_name"]),
        (f["initial"] & phone, c["initial_phone"]),
        (any_name & addr, c["name_address"]),
        (f["person"] & (phone | addr), c["person_contact"]),
        (f["phone"], c["phone"]),
        (f["addr_exact"], c["address_exact"]),
        (f["addr_fuzzy"], c["address_fuzzy"]),
        (f["phone_shared"], c["shared_phone"]),
        (f["addr_shared"], c["shared_address"]),
        (any_name & f["email"], c["name_email"]),
        (f["name"], c["name_only"]),
    ]
    return (kind, "name_variant"), (confidence, c["email"])


def _when(cases: _Cases) -> pl.Expr:
    """`_link_rules` cases as a Polars expression."""
    conditions, default = cases
    expr = pl.lit(default)
    for condition, value in reversed(conditions):
        expr = pl.when(condition).then(pl.lit(value)).otherwise(expr)
    return expr


def _first(cases: _Cases) -> Any:
    """`_link_rules` cases over Python bools."""
    conditions, default = cases
    return next((value for condition, value in conditions if condition), default)


def link_travellers(
    parties: pl.DataFrame, travellers: pl.DataFrame | TravellerIndex
) -> pl.DataFrame:
    """Links between traveller records and parties.

    `parties`: party_key, name, phone, email, address (one row per mention, any
    number of mentions per party), optionally `phone_shared` / `address_shared`
    (whether parties of other names declare the same value; by default computed
    over `parties` itself). `travellers`: TRAVELLERS contract frame.
    Returns traveller_record_id, party_key, link_kind (`LINK_KINDS`),
    confidence (0-1), one row per linked pair (the strongest evidence).
    At most `SMALL_MAX_PARTIES` mentions are linked in Python (`_link_few`), and
    at most `SMALL_KEYS` get their comparison keys in Python (`_party_keys_few`)."""
    index = travellers if isinstance(travellers, TravellerIndex) else TravellerIndex(travellers)
    if parties.height == 0 or index.travellers.height == 0:
        return pl.DataFrame(schema=LINK_SCHEMA)
    if parties.height <= min(SMALL_KEYS, SMALL_MAX_PARTIES):
        links = _link_few(_party_keys_few(*_party_rows(parties)), index)
        return _link_frame(links)
    p = _party_keys(parties)
    if parties.height <= SMALL_MAX_PARTIES:
        links = _link_few([_Party(*row) for row in p.iter_rows()], index)
        return _link_frame(links)
    t = index.candidates(p)
    if t.height == 0:
        return pl.DataFrame(schema=LINK_SCHEMA)
    contacts = (
        pl.concat(
            [
                *[_pairs(p, t, on, evidence) for on, evidence in EXACT_EVIDENCE],
                _fuzzy_addresses(p, t),
                _identity_pairs(p, t),
            ]
        )
        .group_by("rec", "party_key")
        .agg(
            pl.col("evidence").is_in(list(evidences)).any().alias(flag)
            for flag, evidences in EVIDENCE_FLAGS.items()
        )
    )
    # Does the name confirm a contact link? Compare the pair's names directly:
    # equal keys, or close ones (spellings the normaliser does not fold, such as
    # Ismoilov / Ismailov, Aleksandr / Alexander) count as the initials level.
    # (`_name_levels`: the same for a few pairs.)
    pairs = (
        contacts.select("rec", "party_key")
        .join(p.select("party_key", pl.col("name").alias("p_name")).unique(), on="party_key")
        .join(t.select("rec", "name", "native", "initials"), on="rec")
        .with_columns(pl.col("p_name", "name", "native", "initials").fill_null(""))
    )
    close = np.zeros(pairs.height, dtype=bool)
    for col in ("name", "native"):
        scores = process.cpdist(
            pairs["p_name"].to_list(),
            pairs[col].to_list(),
            scorer=fuzz.ratio,
            workers=-1,
            dtype=np.float64,
        )
        close |= scores >= NAME_MIN_SCORE
    names = (
        pairs.with_columns(pl.Series("close", close) & (pl.col("p_name") != ""))
        .group_by("rec", "party_key")
        .agg(
            (
                ((pl.col("p_name") == pl.col("name")) | (pl.col("p_name") == pl.col("native")))
                & (pl.col("p_name") != "")
            )
            .any()
            .alias("name"),
            (
                ((pl.col("p_name") == pl.col("initials")) & (pl.col("p_name") != ""))
                | pl.col("close")
            )
            .any()
            .alias("initial"),
        )
    )
    # Name alone: only names that no other traveller bears.
    keys = t.select("rec", "person", pl.concat_list("name", "native").alias("key")).explode("key")
    keys = keys.drop_nulls("key").filter(pl.col("key") != "")
    name_only = (
        keys.join(index.unique_keys, on="key", how="semi")
        .join(p.select("party_key", pl.col("name").alias("key")).unique(), on="key")
        .select("rec", "party_key")
        .unique()
        .join(contacts, on=["rec", "party_key"], how="anti")
        .with_columns(
            *[pl.lit(False).alias(flag) for flag in EVIDENCE_FLAGS],
            pl.lit(True).alias("name"),
            pl.lit(False).alias("initial"),
        )
    )
    companies = p.group_by("party_key").agg(pl.col("company").any())
    found = pl.concat(
        [
            contacts.join(names, on=["rec", "party_key"], how="left").with_columns(
                pl.col("name").fill_null(False), pl.col("initial").fill_null(False)
            ),
            name_only,
        ],
        how="diagonal",
    ).join(companies, on="party_key", how="left")
    # Born on another day: not the same person, whatever the name says.
    conflict = (
        found.select("rec", "party_key")
        .join(p.select("party_key", pl.col("dob").alias("p_dob")).drop_nulls(), on="party_key")
        .join(t.select("rec", pl.col("dob").alias("t_dob")).drop_nulls(), on="rec")
        .group_by("rec", "party_key")
        .agg((pl.col("p_dob") != pl.col("t_dob")).all().alias("__other_person"))
    )
    found = (
        found.join(conflict, on=["rec", "party_key"], how="left")
        .with_columns(pl.col("__other_person").fill_null(False))
        .with_columns((pl.col(c) & ~pl.col("__other_person")).alias(c) for c in ("name", "initial"))
        .filter(pl.any_horizontal(_LINKING))
    )
    flags = {c: pl.col(c) for c in (*EVIDENCE_FLAGS, "name", "initial")}
    kind, confidence = _link_rules({**flags, "person": ~pl.col("company").fill_null(False)})
    return found.select(
        pl.col("rec").alias("traveller_record_id"),
        "party_key",
        _when(kind).alias("link_kind"),
        _when(confidence).cast(pl.Float64).alias("confidence"),
    ).sort("traveller_record_id", "party_key")


def _link_frame(links: list[_Link]) -> pl.DataFrame:
    """`link_travellers`' frame of the links `_link_few` found."""
    return pl.DataFrame(
        [(link.rec, link.party_key, link.kind, link.confidence) for link in links],
        schema=LINK_SCHEMA,
        orient="row",
    )


# Rows of a frame read one by one, when at most this many (cheaper than a gather).
FEW_ROWS = 32


def _rows(frame: pl.DataFrame, rows: list[int]) -> list[dict[str, Any]]:
    """The rows of `frame` at these positions, as dicts."""
    if len(rows) <= FEW_ROWS:
        return [frame.row(r, named=True) for r in rows]
    return frame[rows].rows(named=True)


class _Link(NamedTuple):
    """A link found by `_link_few`."""

    row: int  # the record's row in `TravellerIndex.keys` (and in `Tables.trips`)
    rec: str
    party_key: Any
    kind: str
    confidence: float


def _link_few(parties: list[_Party], index: TravellerIndex) -> list[_Link]:
    """`link_travellers` of a few parties (rows of `_party_keys`), in Python: the
    same evidence found through the index's lookups (the records of
    `TravellerIndex.candidates`), the same name levels and rules; sorted by
    record id and party key, as the frame. (Record ids are unique: the contract's
    id column.)"""
    lookup = index.index()
    blocks = keys_of([p.address for p in parties], _number_block, _number_block_ascii)
    fields = ("phone", "email", "address", "name", "doc", "dob")
    rows = index.rows_sharing(
        {"block": blocks, **{c: [getattr(p, c) for p in parties] for c in fields}}
    )
    if not rows:
        return []
    records = {r: _Record(**row) for r, row in zip(rows, _rows(index.keys, rows), strict=True)}
    evidence: dict[tuple[int, Any], set[str]] = {}
    for p, block in zip(parties, blocks, strict=True):
        found: list[tuple[int, str]] = []
        for on, kind in EXACT_EVIDENCE:
            shared = f"{kind}_shared" if getattr(p, f"{on}_shared") else kind
            found += [(r, shared) for r in lookup[on].rows(getattr(p, on))]
        for r in lookup["block"].rows(block):
            other = records[r].address
            if (
                p.address is not None
                and other is not None
                and other != p.address
                and fuzz.ratio(p.address, other) >= ADDRESS_MIN_SCORE
            ):
                found.append((r, "address_fuzzy"))
        for r in lookup["doc"].rows(p.doc):
            t = records[r]
            if _document_agrees(p.name, p.dob, t.name, t.native, t.dob):
                found.append((r, "document"))
        if p.name:
            for r in lookup["dob"].rows(p.dob):
                t = records[r]
                if _birth_agrees(p.name, t.name, t.native):
                    found.append((r, "birth_name"))
        for r, what in found:
            evidence.setdefault((r, p.party_key), set()).add(what)
    mentions: dict[Any, list[_Party]] = {}
    for p in parties:
        mentions.setdefault(p.party_key, []).append(p)
    flags: dict[tuple[int, Any], dict[str, bool]] = {}
    for (r, key), kinds in evidence.items():
        f = {flag: not kinds.isdisjoint(evs) for flag, evs in EVIDENCE_FLAGS.items()}
        f["name"], f["initial"] = _name_levels({p.name for p in mentions[key]}, records[r])
        flags[r, key] = f
    # Name alone: only names that no other traveller bears.
    for p in parties:
        if p.name and p.name in index.unique_names:
            for col in ("name", "native"):
                for r in lookup[col].rows(p.name):
                    if (r, p.party_key) not in evidence:
                        only = dict.fromkeys(EVIDENCE_FLAGS, False)
                        flags[r, p.party_key] = {**only, "name": True, "initial": False}
    links = []
    for (r, key), f in flags.items():
        record = records[r]
        born = [p.dob for p in mentions[key] if p.dob is not None]
        if born and record.dob is not None and all(d != record.dob for d in born):
            f["name"] = f["initial"] = False  # born on another day: not the same person
        if not any(f[c] for c in _LINKING):
            continue
        f["person"] = not any(p.company for p in mentions[key])
        kind_cases, confidence_cases = _link_rules(f)
        links.append(_Link(r, record.rec, key, _first(kind_cases), _first(confidence_cases)))
    links.sort(key=lambda link: (link.rec, link.party_key))
    return links


def _name_levels(p_names: set[str | None], record: _Record) -> tuple[bool, bool]:
    """(name, initial) of a contact pair, in Python, as `link_travellers` compares
    the pair's names: any of the party's name keys equals the record's name or
    native key (name), or its initials key, or is close to either (initial)."""
    name = initial = False
    t_name, t_native, t_initials = record.name or "", record.native or "", record.initials or ""
    for p_name in p_names:
        if not p_name:
            continue
        name = name or p_name in (t_name, t_native)
        initial = (
            initial
            or p_name == t_initials
            or fuzz.ratio(p_name, t_name) >= NAME_MIN_SCORE
            or fuzz.ratio(p_name, t_native) >= NAME_MIN_SCORE
        )
    return name, initial


def _keyed(frame: pl.DataFrame) -> pl.DataFrame:
    """Mentions (name, phone, email, address, __t) as comparison keys."""
    return pl.DataFrame(
        {
            "at": frame["__t"],
            "__name": normalise_names(frame["name"], sort_tokens=True),
            "phone": frame.select(phone_key(pl.col("phone"))).to_series(),
            "email": frame.select(email_key(pl.col("email"))).to_series(),
            "address": address_key(frame["address"]),
        }
    )


def _role_names(shipments: pl.DataFrame) -> list[str | None]:
    """The parties' names as declared, role by role (the order of the mentions)."""
    return [
        name
        for role in PARTY_ROLES
        for name in shipments.get_column(f"{role}_name").cast(pl.String).to_list()
    ]


def _history_mentions(
    shipments: pl.DataFrame, ship_mentions: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The shipments' party mentions, role by role, as comparison keys (`_keyed`);
    `ship_mentions`: `features.network.mentions(shipments)`, whose contact keys
    are these (then only the names are computed: in Python for a few shipments,
    as appended; for more, as `features.context.party_keys` normalises them, by
    `normalise_names`, which a batch's `shared_normalisation` answers at once)."""
    if ship_mentions is not None:
        if shipments.height * len(PARTY_ROLES) <= SMALL_MAX_PARTIES:
            names = pl.Series(
                "__name",
                [
                    None if name is None else normalise_name(name, sort_tokens=True)
                    for name in _role_names(shipments)
                ],
                dtype=pl.String,
            )
        else:  # (a batch: each distinct name once, the names `party_keys` normalised)
            names = normalise_names(
                pl.concat(
                    [shipments.get_column(f"{role}_name").cast(pl.String) for role in PARTY_ROLES]
                ),
                sort_tokens=True,
            ).alias("__name")
        return pl.DataFrame(
            [
                ship_mentions.get_column("t").alias("at"),
                names,
                *[ship_mentions.get_column(c) for c in CONTACTS],
            ]
        )
    return _keyed(
        pl.concat(
            [
                shipments.select(
                    pl.col("declared_at").alias("__t"),
                    *[pl.col(f"{role}_{c}").cast(pl.String).alias(c) for c in ("name", *CONTACTS)],
                )
                for role in PARTY_ROLES
            ]
        )
    )


def _trips(travellers: pl.DataFrame, params: Params) -> pl.DataFrame:
    risky = sorted(params.high_risk_countries)
    return travellers.select(
        pl.col("traveller_record_id"),
        pl.col("departure_at").alias("__dep"),
        pl.coalesce(
            pl.concat_str([pl.col("document_country"), pl.col("document_number")], separator=":"),
            pl.col("traveller_record_id"),
        ).alias("__person"),
        pl.col("route_countries")
        .list.eval(pl.element().is_in(risky))
        .list.any()
        .fill_null(False)
        .alias("__risky"),
        pl.col("one_way").fill_null(False).alias("__one_way"),
        (pl.col("payment_form").cast(pl.String) == "cash").fill_null(False).alias("__cash"),
        ((pl.col("departure_at") - pl.col("booked_at")) < LAST_MINUTE)
        .fill_null(False)
        .alias("__last_minute"),
        pl.col("group_id").alias("__group"),
    )


class Tables:
    """What this family reads of the history (see features.state): per contact,
    the names seen with it and since when; the traveller records' keys and
    indexes; their trips."""

    def __init__(
        self,
        shipments: pl.DataFrame,
        travellers: pl.DataFrame,
        params: Params,
        ship_mentions: pl.DataFrame | None = None,
    ):
        """`ship_mentions`: `features.network.mentions(shipments)` when the caller
        has it (the network's tables of the same shipments hold it)."""
        h = _history_mentions(shipments, ship_mentions)
        self.shared = {c: FirstSeen.build(h, c, "__name", "at") for c in CONTACTS}
        self.set_travellers(travellers, params)

    def set_travellers(self, travellers: pl.DataFrame, params: Params) -> None:
        self.records = TravellerIndex(travellers)
        self.trips = _trips(travellers, params)

    def append(
        self,
        shipments: pl.DataFrame,
        travellers: pl.DataFrame | None,
        params: Params,
        ship_mentions: pl.DataFrame | None = None,
    ) -> None:
        """Add shipments declared no earlier than those held (with `<role>_key`);
        new traveller records rebuild the record keys and indexes (the namesake
        counts span all records). `ship_mentions`: `features.network.mentions(
        shipments)` when the caller has it."""
        if shipments.height:
            if ship_mentions is None:
                ship_mentions = network_mentions(shipments)
            h = _history_mentions(shipments, ship_mentions)
            for c in CONTACTS:
                self.shared[c].append(h)
        if travellers is not None and travellers.height:
            self.set_travellers(pl.concat([self.records.travellers, travellers]), params)


def _seen_before(q: pl.DataFrame, tables: Tables) -> list[tuple[str, pl.Series, pl.Series]]:
    """Per contact, for each mention `q` (comparison keys: `_keyed`): the number
    of distinct names declared with its value before its time, and whether its
    own name was."""
    out = []
    for contact in CONTACTS:
        seen = tables.shared[contact]
        names = distinct_query(q, contact, "at", seen, prefix="s").get_column("s_distinct")
        out.append((contact, names, pair_seen_query(q, (contact, "__name"), "at", seen)))
    return out


def _is_shared(declared: Any, names: Any, own: Any) -> Any:
    """Whether a party of another name declared a mention's value before (its
    `<contact>_shared`), from `_seen_before`: as Polars Series or Python values."""
    return declared & (names - own > 0)


def _shared_before(q: pl.DataFrame, tables: Tables) -> list[pl.Series]:
    """Point-in-time `<contact>_shared` of each mention `q` (`_is_shared`)."""
    return [
        _is_shared(q[c].is_not_null(), names.cast(pl.Int64), own.cast(pl.Int64)).alias(
            f"{c}_shared"
        )
        for c, names, own in _seen_before(q, tables)
    ]


# The trip flags counted per shipment (`prepare`), by feature column.
TRIP_COUNTS = {
    "__tr_high_risk": "__risky",
    "__tr_one_way": "__one_way",
    "__tr_cash": "__cash",
    "__tr_last_minute": "__last_minute",
}
COUNTS = ("__tr_trips", *TRIP_COUNTS, "__tr_group")


def prepare(
    ships: pl.DataFrame,
    tables: Tables | History,
    params: Params,
    ship_mentions: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Intermediate columns, one row per shipment in the order given, from the
    traveller records linked (confidence >= FEATURE_MIN_CONFIDENCE) to any of
    its three parties and departed before its declared_at: `__tr_conf` (best
    link confidence, 0 if none), and within `WINDOW` before declared_at:
    `__tr_trips`, `__tr_high_risk` (route touches a high-risk country),
    `__tr_one_way`, `__tr_cash`, `__tr_last_minute` (booked < 72 h before
    departure), `__tr_group` (trips booked in one group with another person
    linked to the same shipment).

    `ships` carries `<role>_key`; `ship_mentions`: `features.network.mentions(ships)`
    when the caller has it. Shipments of at most `SMALL_MAX_PARTIES` parties are
    counted in Python (`_prepare_few`)."""
    if isinstance(tables, History):
        tables = Tables(tables.shipments, tables.travellers, params)
    few = ships.height * len(PARTY_ROLES) <= RESTRICT_MAX_PARTIES  # (a batch links someone)
    if few:
        keyed = ship_mentions if ship_mentions is not None else network_mentions(ships)
        if not tables.records.may_link(keyed):
            # No record can link to a party strongly enough: nothing to count.
            n = ships.height
            return _features_frame(ships, [0.0] * n, {c: [0] * n for c in COUNTS})
        if ships.height * len(PARTY_ROLES) <= SMALL_MAX_PARTIES:
            return _prepare_few(ships, tables, keyed)
    rows = ships.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("__row"), "shipment_id")
    mentions = pl.concat(
        [
            ships.select(
                pl.int_range(pl.len(), dtype=pl.UInt32).alias("__row"),
                pl.col("declared_at").alias("__t"),
                *[
                    pl.col(f"{role}_{c}").cast(pl.String).alias(c)
                    for c in ("name", "phone", "email", "address")
                ],
            )
            for role in PARTY_ROLES
        ]
    )
    # (the contact keys of `ship_mentions` when given: the same, computed once)
    keyed_mentions = (
        _keyed(mentions) if ship_mentions is None else _history_mentions(ships, ship_mentions)
    )
    mentions = mentions.with_columns(_shared_before(keyed_mentions, tables))
    attrs = ["name", "phone", "email", "address", *SHARED_FLAGS]
    tuples = (
        mentions.select(attrs)
        .unique(maintain_order=True)
        .with_row_index("__m")
        .with_columns(pl.col("__m").cast(pl.String).alias("party_key"))
    )
    links = link_travellers(tuples.select("party_key", *attrs), tables.records).filter(
        pl.col("confidence") >= FEATURE_MIN_CONFIDENCE
    )
    trips = tables.trips
    linked = (
        mentions.join(tuples.select(*attrs, "party_key"), on=attrs, how="inner", nulls_equal=True)
        .join(links, on="party_key")
        .join(trips, on="traveller_record_id")
        .filter(pl.col("__dep") < pl.col("__t"))
        .group_by("__row", "traveller_record_id")
        .agg(pl.col("confidence").max(), pl.exclude("confidence", "party_key").first())
    )
    recent = linked.filter(pl.col("__dep") >= pl.col("__t") - WINDOW).with_columns(
        (
            pl.col("__group").is_not_null()
            & (pl.col("__person").n_unique().over("__row", "__group") > 1)
        ).alias("__in_group")
    )
    conf = linked.group_by("__row").agg(pl.col("confidence").max().alias("__tr_conf"))
    window = recent.group_by("__row").agg(
        pl.len().alias("__tr_trips"),
        *[pl.col(flag).sum().alias(c) for c, flag in TRIP_COUNTS.items()],
        pl.col("__in_group").sum().alias("__tr_group"),
    )
    return (
        rows.join(conf, on="__row", how="left", maintain_order="left")
        .join(window, on="__row", how="left", maintain_order="left")
        .select(
            "shipment_id",
            pl.col("__tr_conf").fill_null(0.0),
            *[pl.col(c).fill_null(0).cast(pl.Int64) for c in COUNTS],
        )
    )


def _features_frame(
    ships: pl.DataFrame, conf: list[float], counts: dict[str, list[int]]
) -> pl.DataFrame:
    """`prepare`'s frame from Python values, one per shipment."""
    ids = ships.get_column("shipment_id")
    schema = pl.Schema(
        {"shipment_id": ids.dtype, "__tr_conf": pl.Float64(), **{c: pl.Int64() for c in COUNTS}}
    )
    rows = list(zip(ids.to_list(), conf, *[counts[c] for c in COUNTS], strict=True))
    return pl.DataFrame(rows, schema=schema, orient="row")


def _prepare_few(ships: pl.DataFrame, tables: Tables, keyed: pl.DataFrame) -> pl.DataFrame:
    """`prepare` of a few shipments (`keyed`: their `features.network.mentions`),
    in Python: the mentions' shared flags (`_shared_before`), their links
    (`_link_few`), and per shipment the linked records' trips, counted as the
    frame path counts them (a record's row in `Tables.trips` is its row in the
    index: both follow the records frame)."""
    q = _history_mentions(ships, keyed)
    columns = [
        [raw is not None and is_company_name(raw) for raw in _role_names(ships)],
        *[q.get_column(c).to_list() for c in ("__name", *CONTACTS)],
        *[
            [
                _is_shared(value is not None, n, int(o))
                for value, n, o in zip(q[c].to_list(), names.to_list(), own.to_list(), strict=True)
            ]
            for c, names, own in _seen_before(q, tables)
        ],
    ]
    # One party per distinct mention (its keys and flags; no document, no birth date).
    party_of: dict[tuple[Any, ...], int] = {}
    mention_party = []
    for company, name, phone, email, address, *flags in zip(*columns, strict=True):
        attrs = (company, name, phone, email, address, None, None, *flags)
        mention_party.append(party_of.setdefault(attrs, len(party_of)))
    parties = [_Party(i, *attrs) for attrs, i in party_of.items()]
    links: dict[int, list[_Link]] = {}
    for link in _link_few(parties, tables.records):
        if link.confidence >= FEATURE_MIN_CONFIDENCE:
            links.setdefault(link.party_key, []).append(link)
    # Per shipment, its linked records' rows and best confidence.
    best: list[dict[int, float]] = [{} for _ in range(ships.height)]
    for row, party in zip(keyed.get_column("__row").to_list(), mention_party, strict=True):
        for link in links.get(party, ()):
            held = best[row].get(link.row, link.confidence)
            best[row][link.row] = max(held, link.confidence)
    wanted = sorted({r for b in best for r in b})
    trips = dict(zip(wanted, _rows(tables.trips, wanted), strict=True))
    conf: list[float] = []
    counts: dict[str, list[int]] = {c: [] for c in COUNTS}
    for at, linked in zip(ships.get_column("declared_at").to_list(), best, strict=True):
        before = [
            (trips[r], c)
            for r, c in linked.items()
            if at is not None and trips[r]["__dep"] is not None and trips[r]["__dep"] < at
        ]
        recent = [trip for trip, _ in before if trip["__dep"] >= at - WINDOW]
        persons: dict[Any, set[Any]] = {}
        for trip in recent:
            if trip["__group"] is not None:
                persons.setdefault(trip["__group"], set()).add(trip["__person"])
        conf.append(max((c for _, c in before), default=0.0))
        counts["__tr_trips"].append(len(recent))
        for c, flag in TRIP_COUNTS.items():
            counts[c].append(sum(trip[flag] for trip in recent))
        counts["__tr_group"].append(
            sum(
                trip["__group"] is not None and len(persons[trip["__group"]]) > 1 for trip in recent
            )
        )
    return _features_frame(ships, conf, counts)


@feature(
    F,
    "Best confidence of a link between a party and a traveller record (API/PNR)",
    "A party is linked to a traveller (confidence {value})",
    "Участник сделки связан с пассажиром (достоверность {value})",
    fmt="{:.2f}",
    wordings=(
        Wording(
            lambda v, _c: v == 0,
            "No party is linked to a traveller record",
            "Участники сделки не связаны с записями о пассажирах",
        ),
    ),
)
def traveller_link_confidence() -> pl.Expr:
    return pl.col("__tr_conf")


@feature(
    F,
    "Trips in the 180 days before by travellers linked to a party",
    "Travellers linked to the parties made {value} trip(s) in the last 180 days",
    "Пассажиры, связанные с участниками сделки, совершили {value} "
    "{value|поездку|поездки|поездок} за 180 дней",
)
def traveller_trips_180d() -> pl.Expr:
    return pl.col("__tr_trips")


@feature(
    F,
    "Trips in the 180 days before, by linked travellers, touching a high-risk country",
    "Travellers linked to the parties made {value} trip(s) via high-risk countries "
    "in the last 180 days",
    "Пассажиры, связанные с участниками сделки, совершили {value} "
    "{value|поездку|поездки|поездок} через страны высокого риска за 180 дней",
)
def traveller_high_risk_trips_180d() -> pl.Expr:
    return pl.col("__tr_high_risk")


@feature(
    F,
    "One-way bookings among linked travellers' trips in the 180 days before",
    "{value} one-way booking(s) by travellers linked to the parties",
    "{value} {value|билет|билета|билетов} в одну сторону у пассажиров, связанных с "
    "участниками сделки",
)
def traveller_one_way_180d() -> pl.Expr:
    return pl.col("__tr_one_way")


@feature(
    F,
    "Cash-paid bookings among linked travellers' trips in the 180 days before",
    "{value} booking(s) paid in cash by travellers linked to the parties",
    "{value} {value|билет оплачен|билета оплачены|билетов оплачено} наличными "
    "пассажирами, связанными с участниками сделки",
)
def traveller_cash_180d() -> pl.Expr:
    return pl.col("__tr_cash")


@feature(
    F,
    "Bookings made less than 72 hours before departure among linked travellers' trips "
    "in the 180 days before",
    "{value} last-minute booking(s) by travellers linked to the parties",
    "{value} {value|билет куплен|билета куплены|билетов куплено} менее чем за 72 часа "
    "пассажирами, связанными с участниками сделки",
)
def traveller_last_minute_180d() -> pl.Expr:
    return pl.col("__tr_last_minute")


@feature(
    F,
    "Linked travellers' trips in the 180 days before booked in one group with another "
    "person linked to the same shipment",
    "{value} trip(s) booked together by people linked to the shipment's parties",
    "{value} {value|поездка забронирована|поездки забронированы|поездок забронировано} "
    "вместе лицами, связанными с участниками сделки",
)
def traveller_group_trips_180d() -> pl.Expr:
    return pl.col("__tr_group")
