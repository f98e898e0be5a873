"""Screening tests: normalisation, document matching, and the acceptance test on
the real UN SC Consolidated List (top-3 recall of noisy spellings of listed
names, false-positive rate on generated non-listed names)."""

from __future__ import annotations

import random
import re
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from data_contracts.loaders.un_sc import load_un_consolidated
from features.names import normalise_name, normalise_names
from features.screening import DEFAULT_THRESHOLD, INITIALS_CAP, WatchlistIndex

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
UN_XML = REFERENCE / "un_sc_consolidated_2018-10-29.xml"
SEED = 20181029

# --- noisy spellings -------------------------------------------------------------

_LATIN_TO_CYRILLIC_DIGRAPHS = (
    ("shch", "щ"), ("kh", "х"), ("zh", "ж"), ("ch", "ч"), ("sh", "ш"), ("ts", "ц"),
    ("ya", "я"), ("yu", "ю"), ("yo", "ё"), ("ye", "е"), ("ou", "у"), ("ph", "ф"),
)  # fmt: skip
_LATIN_TO_CYRILLIC = str.maketrans(
    {
        "a": "а", "b": "б", "c": "к", "d": "д", "e": "е", "f": "ф", "g": "г", "h": "х",
        "i": "и", "j": "дж", "k": "к", "l": "л", "m": "м", "n": "н", "o": "о", "p": "п",
        "q": "к", "r": "р", "s": "с", "t": "т", "u": "у", "v": "в", "w": "в", "x": "кс",
        "y": "й", "z": "з",
    }
)  # fmt: skip


def to_cyrillic(name: str) -> str:
    """Spell a Latin name in Cyrillic the way a Russian-speaking clerk might."""
    text = name.lower()
    for latin, cyr in _LATIN_TO_CYRILLIC_DIGRAPHS:
        text = text.replace(latin, cyr)
    return text.translate(_LATIN_TO_CYRILLIC)


def swap_y_i(name: str) -> str:
    """Swap the first y for i (or the first i for y)."""
    for old, new in (("y", "i"), ("Y", "I"), ("i", "y"), ("I", "Y")):
        if old in name:
            return name.replace(old, new, 1)
    return name


def drop_letter(name: str, rng: random.Random) -> str:
    """Drop one letter (not the first) of the longest word."""
    words = name.split()
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    word = words[longest]
    if len(word) < 3:
        return name
    pos = rng.randrange(1, len(word))
    words[longest] = word[:pos] + word[pos + 1 :]
    return " ".join(words)


def reverse_words(name: str) -> str:
    return " ".join(reversed(name.split()))


def noisy_variants(name: str, rng: random.Random) -> dict[str, str]:
    variants = {
        "swap_y_i": swap_y_i(name),
        "drop_letter": drop_letter(name, rng),
        "reversed": reverse_words(name),
    }
    if re.search(r"[A-Za-z]", name):
        variants["cyrillic"] = to_cyrillic(name)
        variants["cyrillic_reversed"] = to_cyrillic(reverse_words(name))
    return variants


# --- generated non-listed names --------------------------------------------------

CENTRAL_ASIAN_GIVEN = (
    "Aibek", "Nurlan", "Yerlan", "Daniyar", "Bakhyt", "Timur", "Rustam", "Farrukh",
    "Sherzod", "Jasur", "Dilshod", "Ulugbek", "Bekzod", "Azamat", "Nursultan", "Askar",
    "Saltanat", "Aigerim", "Dinara", "Gulnara", "Madina", "Zarina", "Kamila", "Nilufar",
    "Feruza", "Malika", "Bakhtiyor", "Otabek", "Sanjar", "Temur", "Kairat", "Marat",
    "Yerbol", "Zhanibek", "Ainur", "Aliya", "Asel", "Begaiym", "Chyngyz", "Emil",
)  # fmt: skip
CENTRAL_ASIAN_SURNAME = (
    "Nurlanov", "Seitkali", "Zhaksybekov", "Tokayev", "Sultanbekov", "Abenov", "Kasymov",
    "Rakhimov", "Tursunov", "Yusupov", "Karimov", "Mirzaev", "Ergashev", "Kholmatov",
    "Sadykov", "Beishenaliev", "Osmonov", "Toktogulov", "Jumabaev", "Asanov", "Rahmonov",
    "Sharipov", "Nazarov", "Davletov", "Ismoilov", "Azimov", "Khodjaev", "Turgunbaev",
    "Kenzhebaev", "Baimukhanov", "Sarsenbaev", "Utemuratov", "Kudaibergenov", "Mamytov",
)  # fmt: skip
RUSSIAN_GIVEN = (
    "Aleksandr", "Dmitriy", "Sergey", "Andrey", "Mikhail", "Vladimir", "Nikolai", "Igor",
    "Oleg", "Pavel", "Konstantin", "Viktor", "Yevgeniy", "Anatoliy", "Natalia", "Olga",
    "Tatiana", "Yelena", "Irina", "Svetlana", "Galina", "Lyudmila", "Valentina", "Vera",
)  # fmt: skip
RUSSIAN_PATRONYMIC = (
    "Aleksandrovich", "Dmitrievich", "Sergeevich", "Andreevich", "Mikhailovich",
    "Vladimirovich", "Nikolaevich", "Igorevich", "Olegovich", "Pavlovich", "Viktorovich",
)  # fmt: skip
RUSSIAN_SURNAME = (
    "Ivanov", "Smirnov", "Kuznetsov", "Popov", "Vasiliev", "Petrov", "Sokolov", "Mikhailov",
    "Novikov", "Fedorov", "Morozov", "Volkov", "Alekseev", "Lebedev", "Semenov", "Egorov",
    "Pavlov", "Kozlov", "Stepanov", "Nikolaev", "Orlov", "Andreev", "Makarov", "Zaitsev",
)  # fmt: skip
CHINESE_SURNAME = (
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu",
    "Sun", "Ma", "Zhu", "Hu", "Guo", "He", "Gao", "Lin", "Luo", "Zheng", "Liang",
)  # fmt: skip
CHINESE_SYLLABLE = (
    "wei", "fang", "na", "min", "jing", "li", "qiang", "lei", "jun", "yang", "yong",
    "yan", "jie", "tao", "ming", "chao", "xiu", "xia", "ping", "gang", "hui", "bo",
)  # fmt: skip
ARABIC_GIVEN = (
    "Khalid", "Yusuf", "Omar", "Tariq", "Samir", "Nabil", "Karim", "Walid", "Faisal",
    "Hamza", "Bilal", "Rashid", "Ziad", "Imad", "Adel", "Hani", "Jamal", "Fadi", "Salim",
)  # fmt: skip
ARABIC_FAMILY = (
    "Haddad", "Khoury", "Nasser", "Mansour", "Saleh", "Hamdan", "Darwish", "Barakat",
    "Qasim", "Sabbagh", "Jaber", "Azzam", "Farouk", "Hijazi", "Shami", "Tamimi",
)  # fmt: skip


def generated_name(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return f"{rng.choice(CENTRAL_ASIAN_GIVEN)} {rng.choice(CENTRAL_ASIAN_SURNAME)}"
    if style == 1:
        return " ".join(
            (rng.choice(RUSSIAN_SURNAME), rng.choice(RUSSIAN_GIVEN), rng.choice(RUSSIAN_PATRONYMIC))
        )
    if style == 2:
        given = rng.choice(CHINESE_SYLLABLE) + rng.choice(CHINESE_SYLLABLE)
        return f"{rng.choice(CHINESE_SURNAME)} {given.capitalize()}"
    return " ".join((rng.choice(ARABIC_GIVEN), rng.choice(ARABIC_GIVEN), rng.choice(ARABIC_FAMILY)))


# --- fixtures ----------------------------------------------------------------------


@cache
def _un_index() -> tuple[pl.DataFrame, WatchlistIndex]:
    frame = load_un_consolidated(UN_XML)
    return frame, WatchlistIndex.build(frame)


@pytest.fixture(scope="module")
def un_list() -> pl.DataFrame:
    return _un_index()[0]


@pytest.fixture(scope="module")
def un_index() -> WatchlistIndex:
    return _un_index()[1]


def acceptance_queries(frame: pl.DataFrame) -> list[tuple[str, str, str]]:
    """(entry_id, noise kind, query) for every name and alias of 50 individuals."""
    rng = random.Random(SEED)
    individuals = frame.filter(pl.col("entity_type") == "individual").sort("entry_id")
    chosen = rng.sample(range(individuals.height), 50)
    out = []
    for row in individuals[chosen].iter_rows(named=True):
        for name in [row["name"], *row["aliases"]]:
            for kind, query in noisy_variants(name, rng).items():
                out.append((row["entry_id"], kind, query))
    return out


def non_listed_names(frame: pl.DataFrame, n: int = 1000) -> list[str]:
    listed = {
        normalise_name(v, sort_tokens=True)
        for col in ("name", "name_original_script")
        for v in frame[col].drop_nulls().to_list()
    } | {normalise_name(v, sort_tokens=True) for v in frame["aliases"].explode().drop_nulls()}
    rng = random.Random(SEED + 1)
    names: list[str] = []
    while len(names) < n:
        name = generated_name(rng)
        if name not in names and normalise_name(name, sort_tokens=True) not in listed:
            names.append(name)
    return names


# --- normalisation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "variants",
    [
        ("Abdullaev", "Abdullayev", "Абдуллаев", "ABDULLAEV", "Abdoullaev"),
        ("Yevgeniy", "Evgeny", "Евгений", "Ievgenii"),
        ("Khodjaev", "Hodzhaev", "Ходжаев", "Xodjaev"),
        ("G'afur Qodirovich", "Ғафур Қодирович", "Gafur Kodirovich"),
        ("Zhanibek", "Janibek", "Жанибек"),
        ("Jamshed", "Ҷамшед", "Dzhamshed"),
        ("O'tkir Hamidov", "Ўткир Ҳамидов"),
        ("Tsoi", "Цой", "Tsoy"),
        ("Shchukin", "Щукин", "Schukin"),
    ],
)
def test_transliteration_variants_normalise_alike(variants: tuple[str, ...]) -> None:
    keys = {normalise_name(v) for v in variants}
    assert len(keys) == 1, keys


def test_company_forms_are_ignored() -> None:
    forms = ("ООО Восток", "Vostok LLC", "TOO VOSTOK", "ТОО «Восток»", "Vostok Ltd.", "ЖШС Восток")
    assert {normalise_name(f) for f in forms} == {"vostok"}
    assert normalise_name("Vostok Trading") != normalise_name("Vostok")
    # A name made only of a company form is not emptied.
    assert normalise_name("ТОО") != ""


def test_company_written_in_cyrillic_is_a_company_form() -> None:
    """Cyrillic "Компани", "Компания", "Корпорация" are the word "company" / "corporation",
    not part of the name ('ООО "Памир Компани"' scored 75 against "Ami Kusoman" on
    the shared "kompani"); a descriptive word ("Трейдинг") is kept."""
    assert {
        normalise_name('ООО "Памир Компани"'),
        normalise_name("Памир Компания"),
        normalise_name("Pamir Korporatsiya"),
        normalise_name("Pamir Company"),
    } == {"pamir"}
    assert normalise_name('ТОО "Памир Трейдинг"') == "pamir treiding"
    assert normalise_name("Компания") != ""  # a name made of nothing else stays


@pytest.mark.parametrize(
    ("a", "b"),
    [("Karimov", "Kasimov"), ("Aliev", "Alieva"), ("Ivanov Petr", "Petrov Ivan"), ("Li Wei", "Li")],
)
def test_different_names_stay_different(a: str, b: str) -> None:
    assert normalise_name(a) != normalise_name(b)


def test_word_order_only_matters_unsorted() -> None:
    assert normalise_name("Akmal Abdullaev") != normalise_name("Abdullaev Akmal")
    assert normalise_name("Akmal Abdullaev", sort_tokens=True) == normalise_name(
        "Абдуллаев Акмал", sort_tokens=True
    )


def test_other_scripts_become_latin_tokens() -> None:
    assert normalise_name("张伟") == normalise_name("Zhang Wei")
    assert normalise_name("Ömer Çelik") == normalise_name("Omer Celik")
    assert normalise_name("عبد الله").isascii()


def test_normalise_names_series_matches_scalar_and_keeps_nulls() -> None:
    series = pl.Series("n", ["Абдуллаев", None, "Abdullayev", "ООО Восток", "Абдуллаев"])
    out = normalise_names(series)
    assert out.name == "n"
    assert out.to_list() == ["abdulaev", None, "abdulaev", "vostok", "abdulaev"]


# --- screening on a small list -----------------------------------------------------


def _small_list() -> pl.DataFrame:
    from data_contracts.loaders import watchlist_frame

    base: dict[str, object] = {
        "list_name": "TEST",
        "aliases": [],
        "name_original_script": None,
        "dates_of_birth": [],
        "nationalities": [],
        "document_numbers": [],
        "addresses": [],
        "listed_on": None,
        "comments": None,
    }
    return watchlist_frame(
        [
            base | {"entry_id": "TEST:1", "reference_number": "1", "entity_type": "individual",
                    "name": "Abdullaev Akmal", "name_original_script": "Абдуллаев Акмал",
                    "document_numbers": ["AB 1234567", "Passport No. 96/184442"]},
            base | {"entry_id": "TEST:2", "reference_number": "2", "entity_type": "entity",
                    "name": "VOSTOK LLC", "aliases": ["Vostok Trading"]},
            base | {"entry_id": "TEST:3", "reference_number": "3", "entity_type": "individual",
                    "name": "Karimov Rustam"},
        ]
    )  # fmt: skip


def test_screen_exact_fuzzy_and_company_forms() -> None:
    index = WatchlistIndex.build(_small_list())
    result = index.screen(["Акмал Абдуллаев", "Abdullaev Akmak", "ТОО «Восток»", "Petrov Ivan"])
    assert result.schema == pl.Schema(
        {
            "query_index": pl.UInt32(),
            "entry_id": pl.String(),
            "matched_name": pl.String(),
            "score": pl.UInt8(),
            "exact": pl.Boolean(),
        }
    )
    best = {r["query_index"]: r for r in result.unique("query_index", keep="first").to_dicts()}
    assert best[0]["entry_id"] == "TEST:1" and best[0]["exact"] and best[0]["score"] == 100
    assert best[1]["entry_id"] == "TEST:1" and not best[1]["exact"]
    assert DEFAULT_THRESHOLD <= best[1]["score"] < 100
    # One word left after the company form: a full score, but too thin to be exact.
    assert best[2]["entry_id"] == "TEST:2" and best[2]["score"] == 100
    assert not best[2]["exact"]
    assert 3 not in best


def test_screen_initials_are_partial_matches() -> None:
    index = WatchlistIndex.build(_small_list())
    result = index.screen(["A. Abdullaev", "Abdullaev A.", "R. Abdullaev"])
    hits = result.filter(pl.col("entry_id") == "TEST:1")
    assert hits["query_index"].to_list() == [0, 1]
    assert not hits["exact"].any()
    assert hits["score"].max() <= INITIALS_CAP  # type: ignore[operator]


def test_screen_limit_threshold_and_empty_queries() -> None:
    index = WatchlistIndex.build(_small_list())
    assert index.screen([]).height == 0
    assert index.screen(["", None, "...", "ООО"]).height == 0
    loose = index.screen(["Abdullaev Rustam"], threshold=40, limit=5)
    assert loose.height >= 2
    assert index.screen(["Abdullaev Rustam"], threshold=40, limit=1).height == 1
    assert loose["score"].is_sorted(descending=True)
    with pytest.raises(ValueError, match="threshold"):
        index.screen(["x"], threshold=0)


def test_screen_accepts_a_series_and_keeps_query_positions() -> None:
    index = WatchlistIndex.build(_small_list())
    names = pl.Series(["nobody", "Karimov Rustam", "nobody", "Рустам Каримов"])
    result = index.screen(names)
    assert result["query_index"].to_list() == [1, 3]
    assert set(result["entry_id"]) == {"TEST:3"}


def test_screen_documents_exact_after_normalisation() -> None:
    index = WatchlistIndex.build(_small_list())
    result = index.screen_documents(
        ["ab-1234567", "АВ1234567", "184442", "1234567", "AB123456", None]
    )
    assert result.filter(pl.col("entry_id") == "TEST:1")["query_index"].to_list() == [0, 1, 2, 3]
    assert 4 not in result["query_index"].to_list()  # one digit short: no match
    assert result.filter(pl.col("query_index") == 2)["matched_document"].to_list() == [
        "Passport No. 96/184442"
    ]


# --- acceptance on the real UN SC list ----------------------------------------------


@pytest.mark.reference
def test_un_noisy_listed_names_are_in_top3(un_list: pl.DataFrame, un_index: WatchlistIndex) -> None:
    queries = acceptance_queries(un_list)
    assert len(queries) > 50 * len(("swap_y_i", "drop_letter", "reversed"))
    result = un_index.screen([q for *_, q in queries], limit=3)
    found = set(zip(result["query_index"].to_list(), result["entry_id"].to_list(), strict=True))
    missed = [
        (kind, query, entry)
        for i, (entry, kind, query) in enumerate(queries)
        if (i, entry) not in found
    ]
    rate = 1 - len(missed) / len(queries)
    print(f"top-3 rate {rate:.2%} on {len(queries)} noisy spellings; missed: {missed[:10]}")
    assert missed == []


@pytest.mark.reference
def test_un_default_threshold_sits_below_every_true_match(
    un_list: pl.DataFrame, un_index: WatchlistIndex
) -> None:
    """The threshold was chosen from these data: the lowest score the right entry
    gets for a noisy spelling must not fall under it."""
    queries = acceptance_queries(un_list)
    result = un_index.screen([q for *_, q in queries], limit=50, threshold=50)
    truth = pl.DataFrame(
        {"query_index": range(len(queries)), "entry_id": [e for e, *_ in queries]},
        schema={"query_index": pl.UInt32, "entry_id": pl.String},
    )
    best = (
        result.join(truth, on=["query_index", "entry_id"])
        .group_by("query_index")
        .agg(pl.col("score").max())
    )
    assert best.height == len(queries)
    lowest = int(best["score"].cast(pl.Int64).min())  # type: ignore[arg-type]
    print(f"lowest true-match score {lowest}, threshold {DEFAULT_THRESHOLD}")
    assert lowest >= DEFAULT_THRESHOLD


@pytest.mark.reference
def test_un_non_listed_names_never_match(un_list: pl.DataFrame, un_index: WatchlistIndex) -> None:
    names = non_listed_names(un_list, 1000)
    result = un_index.screen(names, limit=1)
    hits = [(names[r["query_index"]], r["matched_name"], r["score"]) for r in result.to_dicts()]
    rate = len(hits) / len(names)
    print(f"false-positive rate {rate:.2%} at threshold {DEFAULT_THRESHOLD}: {hits}")
    assert not result["exact"].any()
    assert hits == []


@pytest.mark.reference
def test_un_exact_document_match(un_index: WatchlistIndex) -> None:
    result = un_index.screen_documents(["381310014", " 381 310 014 ", "381310015"])
    assert result["query_index"].to_list() == [0, 1]
    assert set(result["entry_id"]) == {"UN-SC:KPi.033"}


@pytest.mark.reference
def test_un_original_script_name_is_screened(
    un_list: pl.DataFrame, un_index: WatchlistIndex
) -> None:
    row = un_list.filter(pl.col("name_original_script").is_not_null()).row(0, named=True)
    result = un_index.screen([row["name_original_script"]], limit=3)
    assert row["entry_id"] in result["entry_id"].to_list()
    assert result.filter(pl.col("entry_id") == row["entry_id"])["exact"].item()


def test_tokens_align_pairs_every_token_and_limits_leftovers() -> None:
    from features.screening import tokens_align

    def key(name: str) -> str:
        return normalise_name(name, sort_tokens=True)

    assert tokens_align(key("Abd AlHadi"), key("Abd Al Hadi"))  # one token written as two
    assert tokens_align(key("Kyung Ra Su"), key("Ra Kyong Su"))
    assert not tokens_align(key("Salim Salim Hamdan"), key("Salim Ahmad Salim Hamdan"))
    assert not tokens_align(key("Zhang Yongjing"), key("Jang Myong-Jin"))


@pytest.mark.reference
def test_screening_a_few_names_in_python_equals_the_frame_path(
    un_list: pl.DataFrame, un_index: WatchlistIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`screen_few` (an online call's three parties) gives exactly the rows of the
    frame path: noisy listed names, initials, unlisted names, empties, repeats;
    computed, or primed in bulk (`prime`), or answered again from the memo."""
    from features import screening

    un_index = WatchlistIndex.build(un_list)  # (its own memo)
    queries = [q for *_, q in acceptance_queries(un_list)][:120]
    queries += [*non_listed_names(un_list, 40), "", "   ", "Ltd", queries[0], "A. Karimov"]
    rng = random.Random(SEED + 2)
    rng.shuffle(queries)
    for start in range(0, len(queries), 6):
        chunk = queries[start : start + 6]
        for limit, threshold in ((3, DEFAULT_THRESHOLD), (50, 70), (1, 50)):
            if start % 12:
                un_index.prime(chunk[::2], limit=limit, threshold=threshold)
            few = un_index.screen(chunk, limit=limit, threshold=threshold)
            assert (
                few.to_dicts()
                == un_index.screen(chunk, limit=limit, threshold=threshold).to_dicts()
            )
            with monkeypatch.context() as m:
                m.setattr(screening, "SMALL_QUERIES", 0)
                frame = un_index.screen(chunk, limit=limit, threshold=threshold)
            assert few.to_dicts() == frame.to_dicts()


# --- a dropped letter the phonetic folding turns into another key; weak aliases ------


def test_tokens_align_compares_the_spelled_words_too() -> None:
    """The key of "Meerez" is "mirez" ("ee" -> "i"), that of "Meherez" is
    "meherez": 0.67 alike, under the pairing's 0.7, while the spellings are one
    letter apart. Only the keys: no pairing; with the spellings: paired."""
    from features.names import spelled_name
    from features.screening import tokens_align

    query, listed = "Meerez ben Ahdoud ben Amdouni", "Meherez ben Ahdoud ben Amdouni"
    qk, lk = normalise_name(query, sort_tokens=True), normalise_name(listed, sort_tokens=True)
    assert spelled_name(query) == "ahdoud amdouni ben ben meerez"  # the keys' order
    assert not tokens_align(qk, lk)
    assert tokens_align(qk, lk, spelled_name(query), spelled_name(listed))
    # The spellings only help: a name with a word that has no counterpart still fails.
    other = "Mirez ben Ahdoud ben Karimov"
    assert not tokens_align(
        normalise_name(other, sort_tokens=True), lk, spelled_name(other), spelled_name(listed)
    )


def test_a_dropped_letter_changing_the_folded_key_still_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real miss on the UN list (UN-SC:QDi.092, a Good alias with one letter
    dropped), on a one-entry list: found above the threshold by the Python path
    and by the frame path alike, and not exact."""
    from data_contracts.loaders import watchlist_frame
    from features import screening

    row = _small_list().row(2, named=True) | {
        "entry_id": "TEST:9",
        "name": "MEHREZ BEN MOHAMED BEN SASSI",
        "aliases": ["Meherez ben Ahdoud ben Amdouni"],
    }
    index = WatchlistIndex.build(watchlist_frame([row]))
    queries = ["Meerez ben Ahdoud ben Amdouni", "Мерез бен Ахдуд бен Амдуни", "Akmal Karimov"]
    few = index.screen(queries).to_dicts()
    with monkeypatch.context() as m:
        m.setattr(screening, "SMALL_QUERIES", 0)
        assert index.screen(queries).to_dicts() == few
    assert [(r["query_index"], r["entry_id"], r["exact"]) for r in few] == [
        (0, "TEST:9", False),
        (1, "TEST:9", False),
    ]
    assert all(DEFAULT_THRESHOLD <= r["score"] < 100 for r in few)


@pytest.mark.reference
def test_un_low_quality_aliases_do_not_hit(un_list: pl.DataFrame, un_index: WatchlistIndex) -> None:
    """Trade name "Hanil Corporation" scored 89 against "Hani", a Low-quality alias of
    UN-SC:QDi.336 (an individual); Low-quality aliases are no longer screened, so
    neither the trade name nor the bare word hits that entry, while the entry's
    Good alias, with a letter dropped, still does. (Every Good alias of the
    sample with noise in the top 3: `test_un_noisy_listed_names_are_in_top3`.)"""
    khattab = un_list.filter(pl.col("entry_id") == "UN-SC:QDi.336").row(0, named=True)
    assert "Hani" not in khattab["aliases"] and "Hani" in khattab["comments"]
    result = un_index.screen(["Hanil Corporation", "Hani", "Samir Ahmed al-Khayt"], limit=3)
    assert result.filter(pl.col("query_index") < 2).height == 0
    found = result.filter(pl.col("query_index") == 2)
    assert found["entry_id"].to_list()[0] == "UN-SC:QDi.336"
