"""A name sent decomposed (Unicode NFD: ``Е`` + combining diaeresis for ``Ё``) gives
the same comparison key as the same name composed (NFC), on the small Python path
and the Polars frame path alike; names already in NFC keep exactly the keys they had
(findings-ingest F13)."""

from __future__ import annotations

import unicodedata

import polars as pl
import pytest

from features.context import PARTY_ROLES, SMALL_KEYS, party_keys
from features.names import normalise_name, normalise_names, to_latin

# NFC names and their keys as computed before the normalisation was added.
KNOWN_KEYS = {
    "Çelik Örnek Ёлка Tekstil": "celik ornek iolka tekstil",
    "Абдуллаев Акмал Рустамович": "abdulaev akmal rustamovich",
    "ТОО «Қазақ Құрылыс»": "kazak kurilis",
    "Ўзбекистон Йўллари МЧЖ": "ozbekiston iolari",
    "Ёрқиной Ғаниева": "iorkinoi ganeva",
    "Müller & Söhne GmbH": "muler sohne",
    "张伟": "jang vei",
    "Ｆｕｌｌ Ｗｉｄｔｈ Co": "ful vidth",
    "ﬁne ﬂowers LLC": "fine flovers",
    "İstanbul Şeker A.Ş.": "istanbul seker a s",
    "Ελληνική Εταιρεία": "eliniki etaireia",
    "Ђорђе Јовановић": "jorje jovanovic",
    "Ǆemal Ǉubović": "dzemal ljubovic",
    "café résumé": "cafe resume",
    "O'tkir Xo'jaev": "otkir hojaev",
    "x²y": "h2i",
}


@pytest.mark.parametrize("name", sorted(KNOWN_KEYS))
def test_nfc_names_keep_their_keys_and_nfd_gives_the_same(name: str) -> None:
    assert unicodedata.is_normalized("NFC", name)
    assert normalise_name(name) == KNOWN_KEYS[name]
    for form in ("NFD", "NFKD"):
        decomposed = unicodedata.normalize(form, name)
        if form == "NFKD" and unicodedata.normalize("NFKC", name) != name:
            continue  # compatibility forms are spelt out differently on purpose
        assert normalise_name(decomposed) == KNOWN_KEYS[name], form


def test_decomposed_yo_short_i_and_short_u_transliterate_as_the_letters() -> None:
    for letter, latin in (("Ё", "yo"), ("ё", "yo"), ("Й", "y"), ("ў", "o"), ("Ї", "yi")):
        assert to_latin(unicodedata.normalize("NFD", letter)) == latin


def test_small_path_and_frame_path_agree_on_nfd_names() -> None:
    names = [
        *KNOWN_KEYS,
        *(unicodedata.normalize("NFD", n) for n in KNOWN_KEYS),
        "e\u0301te",
        None,
    ]
    series = normalise_names(pl.Series("n", names), sort_tokens=True)
    expected = [None if n is None else normalise_name(n, sort_tokens=True) for n in names]
    assert series.to_list() == expected

    def frame(rows: int) -> pl.DataFrame:
        data: dict[str, list[str | None]] = {}
        for role in PARTY_ROLES:
            data[f"{role}_id"] = [None] * rows
            data[f"{role}_name"] = [names[i % len(names)] for i in range(rows)]
        return pl.DataFrame(data, schema={c: pl.String for c in data})

    small = party_keys(frame(SMALL_KEYS))
    big = party_keys(frame(SMALL_KEYS + len(names)))
    assert big.head(SMALL_KEYS).equals(small)
    nfc = unicodedata.normalize("NFC", "Çelik Örnek Ёлка Tekstil")
    keys = party_keys(
        pl.DataFrame(
            {
                **{f"{r}_id": [None, None] for r in PARTY_ROLES},
                **{f"{r}_name": [nfc, unicodedata.normalize("NFD", nfc)] for r in PARTY_ROLES},
            },
            schema={f"{r}_{c}": pl.String for r in PARTY_ROLES for c in ("id", "name")},
        )
    )
    assert keys["consignor_key"][0] == keys["consignor_key"][1]
