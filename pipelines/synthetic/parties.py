"""Parties of the world (companies and persons) with the names people actually
write: Latin and Cyrillic scripts, transliteration variants, legal forms in
several languages. Each party has four name variants; variant 0 or 1 is its
usual one. Also phones, e-mails, addresses and tax ids. Vectorised with Polars."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipelines.synthetic import catalog as cat
from pipelines.synthetic.timeline import ser

N_VARIANTS = 4

PHONE_PREFIX: dict[str, tuple[str, ...]] = {
    "KZ": ("701", "702", "705", "707", "747", "771", "775", "777", "778"),
    "RU": ("903", "905", "916", "925", "926", "985"),
    "KG": ("555", "700", "707", "770", "550"),
    "TJ": ("93", "91", "92", "98", "90"),
    "UZ": ("90", "91", "93", "94", "97", "99", "88"),
    "TM": ("61", "62", "63", "64", "65"),
    "CN": ("138", "139", "136", "186", "150"),
    "TR": ("532", "533", "542", "505"),
    "IR": ("912", "915", "935"),
    "AF": ("70", "79", "78", "77"),
    "PK": ("300", "321", "333"),
    "AE": ("50", "52", "55"),
}
COUNTRY_CODE: dict[str, str] = {k: v[2] for k, v in cat.PARTNERS.items()}
TAX_ID_DIGITS: dict[str, int] = {"KZ": 12, "UZ": 9, "KG": 14, "TJ": 9, "TM": 12, "RU": 10, "BY": 9}


def _pick(rng: np.random.Generator, options: tuple[str, ...], n: int) -> np.ndarray:
    return np.asarray(options, dtype=object)[rng.integers(0, len(options), n)]


def phones(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    """Phone numbers as written on declarations: '+7 701 234 56 78'."""
    n = len(countries)
    out = np.empty(n, dtype=object)
    d3 = rng.integers(0, 1000, n)
    d2a = rng.integers(0, 100, n)
    d2b = rng.integers(0, 100, n)
    for country in np.unique(countries):
        m = countries == country
        cc = COUNTRY_CODE.get(str(country), "44")
        pre = _pick(rng, PHONE_PREFIX.get(str(country), ("20", "30", "40")), int(m.sum()))
        out[m] = [
            f"+{cc} {p} {a:03d} {b:02d} {c:02d}"
            for p, a, b, c in zip(pre, d3[m], d2a[m], d2b[m], strict=True)
        ]
    return out


def tax_ids(rng: np.random.Generator, countries: np.ndarray) -> np.ndarray:
    n = len(countries)
    out = np.full(n, None, dtype=object)
    raw = rng.integers(10**13, 10**14, n)
    present = rng.random(n)
    for country, digits in TAX_ID_DIGITS.items():
        m = (countries == country) & (present < 0.9)
        out[m] = [str(v)[:digits] for v in raw[m]]
    m = (countries == "CN") & (present < 0.3)
    out[m] = [f"91650{v}X" for v in raw[m]]
    return out


DOC_PREFIX = {
    "KZ": "N",
    "UZ": "FA",
    "KG": "AC",
    "TJ": "40",
    "TM": "A",
    "RU": "75",
    "TR": "U",
    "CN": "E",
}
ID_CARD_PREFIX = {"KZ": "0", "UZ": "AD", "KG": "ID", "TJ": "A", "TM": "I", "RU": "45"}


def document_numbers(
    rng: np.random.Generator, countries: np.ndarray, *, id_card: bool = False
) -> np.ndarray:
    """Passport (or national ID card) numbers in each country's format."""
    digits = rng.integers(10**7, 10**8, len(countries))
    table = ID_CARD_PREFIX if id_card else DOC_PREFIX
    return np.array(
        [f"{table.get(str(c), 'P')}{d}" for c, d in zip(countries, digits, strict=True)],
        dtype=object,
    )


def birth_days(rng: np.random.Generator, n: int) -> np.ndarray:
    """Dates of birth of adults, as days since 1970-01-01 (born 1955 to 2003)."""
    return rng.integers(-5_480, 12_050, n)


def addresses(rng: np.random.Generator, countries: np.ndarray, cyrillic: np.ndarray) -> np.ndarray:
    n = len(countries)
    out = np.empty(n, dtype=object)
    num = rng.integers(1, 300, n)
    off = rng.integers(1, 120, n)
    st = rng.integers(0, len(cat.STREETS), n)
    ci = rng.integers(0, 1000, n)
    for i in range(n):
        c = str(countries[i])
        if c in cat.CITIES:
            cities = cat.CITIES[c]
            city_lat, city_cyr = cities[ci[i] % len(cities)]
            s_lat, s_cyr = cat.STREETS[st[i]]
            if cyrillic[i]:
                out[i] = f"г. {city_cyr}, ул. {s_cyr}, д. {num[i]}, оф. {off[i]}"
            else:
                out[i] = f"{city_lat}, {s_lat} str. {num[i]}, office {off[i]}"
        else:
            fc = cat.FOREIGN_CITIES.get(c, ("Capital",))
            out[i] = f"No. {num[i]}, Building {off[i]}, {fc[ci[i] % len(fc)]}, {c}"
    return out


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isascii() and ch.isalnum())[:20] or "info"


def companies(rng: np.random.Generator, countries: np.ndarray) -> dict[str, np.ndarray]:
    """Company names in four variants per party, by country conventions."""
    n = len(countries)
    names = np.empty((n, N_VARIANTS), dtype=object)
    latin = np.empty(n, dtype=object)
    w1 = rng.integers(0, len(cat.COMPANY_WORD1), n)
    w2 = rng.integers(0, len(cat.COMPANY_WORD2), n)
    alt = rng.integers(0, 8, n)
    for i in range(n):
        c = str(countries[i])
        if c in cat.LEGAL_FORMS:
            lat_sp, cyr1 = cat.COMPANY_WORD1[w1[i]]
            lat2, cyr2 = cat.COMPANY_WORD2[w2[i]]
            f_cyr, f_lat, f_en = cat.LEGAL_FORMS[c]
            la0 = lat_sp[0]
            lak = lat_sp[alt[i] % len(lat_sp)]
            names[i, 0] = f'{f_cyr} "{cyr1} {cyr2}"'
            names[i, 1] = f'{f_lat} "{la0} {lat2}"'
            names[i, 2] = f"{lak} {lat2} {f_en}".upper()
            alt_form = cat.KZ_ALT_FORM if c == "KZ" else f_cyr
            names[i, 3] = (
                f"{alt_form} «{cyr1}-{cyr2}»" if c == "KZ" else f"{cyr1} {cyr2}, {alt_form}"
            )
            latin[i] = f"{la0} {lat2}"
        elif c == "CN":
            city = cat.CN_CITIES[alt[i] % len(cat.CN_CITIES)]
            k = w1[i] % len(cat.CN_WORDS)
            act = cat.CN_ACTIVITY[w2[i] % len(cat.CN_ACTIVITY)]
            base = f"{city} {cat.CN_WORDS[k]} {act}"
            names[i, 0] = f"{base} Co., Ltd."
            names[i, 1] = f"{base} CO.,LTD".upper()
            names[i, 2] = f"{base} Co Ltd"
            names[i, 3] = f"Торговая компания «{cat.CN_WORDS_RU[k]}» ({city})"
            latin[i] = base
        else:
            bases, suffixes = cat.FOREIGN_COMPANY.get(c, (("Global", "Prime", "Union"), ("Ltd.",)))
            base = bases[w1[i] % len(bases)]
            suf = suffixes[w2[i] % len(suffixes)]
            names[i, 0] = f"{base} {suf}"
            names[i, 1] = f"{base} {suf}".upper()
            names[i, 2] = f"{base} {suf}".replace(".", "").replace(",", "")
            names[i, 3] = f"{base} {suf.split()[0]}"
            latin[i] = base
    return {"names": names, "latin": latin}


def person_parts(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surname index, alternative-spelling index, given-name index, female flag,
    father's given-name index (the patronymic)."""
    sur = rng.integers(0, len(cat.SURNAMES), n)
    female = rng.random(n) < 0.35
    given = np.where(
        female,
        rng.integers(cat.N_MALE_GIVEN, len(cat.GIVEN_NAMES), n),
        rng.integers(0, cat.N_MALE_GIVEN, n),
    )
    n_sp = np.array([len(s[0]) for s in cat.SURNAMES])[sur]
    spelling = np.where(n_sp > 1, 1 + rng.integers(0, 8, n) % np.maximum(n_sp - 1, 1), 0)
    father = rng.integers(0, cat.N_MALE_GIVEN, n)
    return sur, spelling, given, female, father


def patronymics(father: np.ndarray, female: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latin and Cyrillic patronymics (see `catalog.patronymic`)."""
    pairs = [cat.patronymic(int(f), bool(w)) for f, w in zip(father, female, strict=True)]
    return (
        np.array([p[0] for p in pairs], dtype=object),
        np.array([p[1] for p in pairs], dtype=object),
    )


def surname_latin(sur: np.ndarray, spelling: np.ndarray, female: np.ndarray) -> np.ndarray:
    out = np.array(
        [cat.SURNAMES[s][0][k] for s, k in zip(sur, spelling, strict=True)], dtype=object
    )
    fem = female & np.array([str(x).endswith(("v", "w")) for x in out])
    out[fem] = [str(x) + "a" for x in out[fem]]
    return out


def surname_cyr(sur: np.ndarray, female: np.ndarray) -> np.ndarray:
    out = np.array([cat.SURNAMES[s][1] for s in sur], dtype=object)
    fem = female & np.array([str(x).endswith("в") for x in out])
    out[fem] = [str(x) + "а" for x in out[fem]]
    return out


def individuals(rng: np.random.Generator, n: int, entrepreneur: bool) -> dict[str, np.ndarray]:
    """Persons (private or sole traders, 'ИП'), four name variants each:
    Cyrillic full with patronymic, Latin passport spelling, Latin variant spelling
    with patronymic, Cyrillic surname with initials ("Абдуллаев А.Р.")."""
    sur, spelling, given, female, father = person_parts(rng, n)
    p_lat, p_cyr = patronymics(father, female)
    lat0 = surname_latin(sur, np.zeros(n, dtype=np.int64), female)
    lat_alt = surname_latin(sur, spelling, female)
    cyr = surname_cyr(sur, female)
    g_lat = np.array([cat.GIVEN_NAMES[g][0] for g in given], dtype=object)
    g_cyr = np.array([cat.GIVEN_NAMES[g][1] for g in given], dtype=object)
    # Some parties write their Latin name only with a variant spelling.
    uses_variant = rng.random(n) < 0.3
    lat1 = np.where(uses_variant, lat_alt, lat0)
    pre_c, pre_l = ("ИП ", "IP ") if entrepreneur else ("", "")
    names = np.empty((n, N_VARIANTS), dtype=object)
    names[:, 0] = [f"{pre_c}{s} {g} {f}" for s, g, f in zip(cyr, g_cyr, p_cyr, strict=True)]
    names[:, 1] = [f"{pre_l}{s} {g}" for s, g in zip(lat1, g_lat, strict=True)]
    names[:, 2] = [f"{s} {g} {f}".upper() for s, g, f in zip(lat_alt, g_lat, p_lat, strict=True)]
    names[:, 3] = [f"{s} {g[0]}.{f[0]}." for s, g, f in zip(cyr, g_cyr, p_cyr, strict=True)]
    return {
        "father": father,
        "names": names,
        "latin": lat1,
        "sur": sur,
        "given": given,
        "female": female,
        "uses_variant": uses_variant,
    }


def emails(rng: np.random.Generator, latin: np.ndarray, share: float) -> np.ndarray:
    n = len(latin)
    out = np.full(n, None, dtype=object)
    has = rng.random(n) < share
    dom = _pick(rng, cat.EMAIL_DOMAINS, n)
    num = rng.integers(1, 99, n)
    idx = np.flatnonzero(has)
    out[idx] = [f"{_slug(str(latin[i]))}{num[i]}@{dom[i]}" for i in idx]
    return out


class PartyBook:
    """All parties of the world; index = position. Keys are truth only."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.frames: list[pl.DataFrame] = []
        self.names: list[np.ndarray] = []
        self.size = 0
        self.overrides: list[tuple[np.ndarray, str, np.ndarray]] = []

    def add(
        self,
        countries: np.ndarray,
        kind: str,
        *,
        entrepreneur: bool = True,
        cyrillic_share: float = 0.6,
        email_share: float = 0.6,
        primary_latin: np.ndarray | None = None,
    ) -> np.ndarray:
        """Add parties and return their indices."""
        rng = self.rng
        n = len(countries)
        countries = np.asarray(countries, dtype=object)
        if kind == "company":
            made = companies(rng, countries)
            sur = np.full(n, -1)
            given = np.full(n, -1)
            female = np.zeros(n, dtype=bool)
            uses_variant = np.zeros(n, dtype=bool)
            father = np.full(n, -1)
            dob = np.full(n, None, dtype=object)
            passport = np.full(n, None, dtype=object)
            id_card = np.full(n, None, dtype=object)
        else:
            made = individuals(rng, n, entrepreneur)
            sur, given = made["sur"], made["given"]
            female, uses_variant = made["female"], made["uses_variant"]
            father = made["father"]
            dob = birth_days(rng, n).astype(object)
            passport = document_numbers(rng, countries)
            id_card = document_numbers(rng, countries, id_card=True)
        home = np.isin(countries, list(cat.LEGAL_FORMS))
        cyr = home & (rng.random(n) < cyrillic_share)
        if primary_latin is None:
            primary = np.where(cyr | ~home, 0, 1)
            primary = np.where(home, primary, 0)
        else:
            primary = np.where(primary_latin, 1, 0)
        idx = np.arange(self.size, self.size + n)
        frame = pl.DataFrame(
            {
                "party_key": [f"PK{i:07d}" for i in idx],
                "country": countries.astype(str),
                "kind": np.full(n, kind),
                "primary": primary.astype(np.int64),
                "latin": made["latin"].astype(str),
                "address": addresses(rng, countries, cyr).astype(str),
                "phone": phones(rng, countries).astype(str),
                "email": ser(emails(rng, made["latin"], email_share), dtype=pl.String),
                "tax_id": ser(tax_ids(rng, countries), dtype=pl.String),
                "sur": sur.astype(np.int64),
                "given": given.astype(np.int64),
                "female": female,
                "uses_variant": uses_variant,
                "father": father.astype(np.int64),
                "dob": ser(dob, dtype=pl.Int64).cast(pl.Int32).cast(pl.Date),
                "passport": ser(passport, dtype=pl.String),
                "id_card": ser(id_card, dtype=pl.String),
            }
        )
        self.frames.append(frame)
        self.names.append(made["names"])
        self.size += n
        return idx

    def frame(self) -> pl.DataFrame:
        full = pl.concat(self.frames, how="vertical")
        for idx, column, values in self.overrides:
            series = full[column].scatter(idx, ser(values, dtype=full[column].dtype))
            full = full.with_columns(series)
        return full

    def name_table(self) -> np.ndarray:
        return np.concatenate(self.names, axis=0).reshape(-1)

    def set_column(self, idx: np.ndarray, column: str, values: np.ndarray) -> None:
        """Overwrite a column for some parties (e.g. shared phone of a network)."""
        self.overrides.append((np.asarray(idx, dtype=np.int64), column, np.asarray(values)))

    def get(self, idx: int, column: str) -> object:
        """Value of one party's column (before overrides applied later)."""
        for idx_o, column_o, values in reversed(self.overrides):
            if column_o == column and idx in idx_o:
                return values[int(np.flatnonzero(idx_o == idx)[0])]
        offset = 0
        for frame in self.frames:
            if idx < offset + frame.height:
                return frame[column][idx - offset]
            offset += frame.height
        raise IndexError(idx)
