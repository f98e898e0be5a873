"""Name normalisation for watchlist screening.

`normalise_name` turns a person's or company's name written in any script and
any transliteration into a comparison key:

1. Unicode NFC (a decomposed ``Ё`` is ``Ё``), casefold;
2. transliterate to Latin: Cyrillic by a hand-made table (Russian close to the
   GOST 7.79 / passport practice, plus the Kazakh, Uzbek, Tajik, Kyrgyz and
   Ukrainian letters, e.g. ``қ``->q, ``ғ``->gh, ``ў``->o, ``ҷ``->j, ``ң``->ng),
   every other script by anyascii (Arabic, Chinese, Korean, accented Latin...);
   CJK and Hangul syllables become separate tokens ("张伟" -> "zhang wei");
3. drop apostrophes and dots (``O'tkir``, ``L.L.C.``), turn any other
   non-alphanumeric character into a space;
4. drop company-form words (LLC, LTD, OOO/ООО, TOO/ТОО, ЖШС, MChJ, OsOO, JSC,
   AO/ЗАО/ОАО, IP/ИП, GmbH, Inc, Co, Corp, Company/Компани(я)...), unless the
   name is made of nothing else; descriptive words such as "trading" are kept;
5. fold transliteration variants into one phonetic-ish spelling per token:
   shch/sch->sh, dzh/dj/zh->j, tch->ch, kh->h, gh->g, ph->f, ck->k, q->k,
   w->v, x->h at the start of a word or before a consonant (Uzbek Latin:
   Xodjaev, Baxtiyor) and ks elsewhere (Maxim), ts/tz->c, y->i, ou/oo->u,
   ee->i, doubled consonants and aa/ii -> one letter (a doubled u or o is kept:
   it is rarely a spelling variant), ie->e (so Abdullaev, Abdullayev,
   ABDULLAEV and Абдуллаев all give "abdulaev");
6. optionally sort the tokens (word-order-free key).

The key is deterministic and only meant for comparison, never for display.
`normalise_names` applies it to a Polars Series, computing each distinct value
once.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from functools import lru_cache

import polars as pl
from anyascii import anyascii
from rapidfuzz import fuzz

_CYRILLIC: dict[str, str] = {
    # Russian
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "yo", "ж": "zh",
    "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya",
    # Kazakh, Kyrgyz
    "ә": "a", "ғ": "gh", "қ": "q", "ң": "ng", "ө": "o", "ұ": "u", "ү": "u", "һ": "h",
    "і": "i",
    # Uzbek, Tajik
    "ў": "o", "ҳ": "h", "ҷ": "j", "ӣ": "i", "ӯ": "u", "ҫ": "s",
    # Ukrainian, Belarusian
    "є": "ye", "ї": "yi", "ґ": "g",
}  # fmt: skip
_TABLE = str.maketrans(_CYRILLIC)

COMPANY_FORMS: frozenset[str] = frozenset(
    {
        # English and international
        "llc", "ltd", "limited", "co", "inc", "incorporated", "corp", "corporation",
        "company", "plc", "llp", "gmbh", "jsc", "ojsc", "cjsc", "pjsc", "fze", "fzco",
        # Russian (after transliteration): ООО, ЗАО, ОАО, ПАО, АО, ИП, ЧП
        "ooo", "zao", "oao", "pao", "ao", "ip", "chp",
        # Kazakh ТОО / ЖШС, Kyrgyz ОсОО, Uzbek MChJ / МЧЖ / XK, Ukrainian ТОВ
        "too", "zhshs", "jshs", "osoo", "mchj", "mchzh", "xk", "tov",
        # "Company" and "Corporation" written in Cyrillic (Компани, Компания,
        # Корпорация, Корпорейшн), as Russian-speaking clerks spell trade names
        "kompani", "kompaniya", "kompaniia", "korporatsiya", "korporatsiia", "korporeyshn",
    }
)  # fmt: skip

_DROP = re.compile(r"['`.\u2019\u02bb\u02bc]")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_PHONETIC: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (r"shch|sch", "sh"),
        (r"dzh|dj|zh", "j"),
        (r"tch", "ch"),
        (r"kh", "h"),
        (r"gh", "g"),
        (r"ph", "f"),
        (r"ck", "k"),
        (r"q", "k"),
        (r"w", "v"),
        (r"^x|x(?=[^aeiouy])", "h"),
        (r"x", "ks"),
        (r"ts|tz", "c"),
        (r"y", "i"),
        (r"ou", "u"),
        (r"oo", "u"),
        (r"ee", "i"),
        (r"([b-df-hj-np-tv-z])\1+|(a)a+|(i)i+", r"\1\2\3"),
        (r"ie", "e"),
    )
)


def _is_syllabic(char: str) -> bool:
    """CJK ideographs, kana and Hangul: anyascii writes one syllable per char."""
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
    )


def to_latin(text: str) -> str:
    """Casefolded Latin (ASCII) spelling of `text`, any script. The text is first
    brought to Unicode NFC, so that a decomposed letter (``Е`` + combining diaeresis,
    as some systems send ``Ё``) is the letter the table knows. NFC, not NFKC: it is
    the identity on text already in NFC (every key computed so far stays the same),
    and the compatibility forms NFKC would fold (full-width letters, ligatures) are
    spelt out by anyascii anyway."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = text.casefold().translate(_TABLE)
    if text.isascii():
        return text
    parts = [
        (f" {anyascii(ch)} " if _is_syllabic(ch) else anyascii(ch)) if not ch.isascii() else ch
        for ch in text
    ]
    return "".join(parts).casefold()


@lru_cache(maxsize=262_144)
def phonetic_token(token: str) -> str:
    """Fold transliteration variants of one Latin lowercase token."""
    for pattern, repl in _PHONETIC:
        token = pattern.sub(repl, token)
    return token


# Initials written together ("А.Р." -> "a.r.", "Ш.А." -> "sh.a."): split into
# tokens unless they spell a company form ("L.L.C.").
_INITIALS = re.compile(r"(?<![a-z0-9])(?:[a-z]{1,4}\.){2,}")


def _split_initials(match: re.Match[str]) -> str:
    group = match.group(0)
    if group.replace(".", "") in COMPANY_FORMS:
        return group
    return " " + group.replace(".", " ") + " "


def name_tokens(text: str) -> list[str]:
    """Latin lowercase tokens of a name, company forms dropped (before phonetic folding)."""
    latin = _INITIALS.sub(_split_initials, to_latin(text))
    latin = _NON_ALNUM.sub(" ", _DROP.sub("", latin))
    tokens = latin.split()
    kept = [t for t in tokens if t not in COMPANY_FORMS]
    return kept or tokens


# Room for every distinct name and address of a million-shipment history with its
# travellers (~900,000 normalised per feature state built; ~170 bytes an entry): a
# service's feature state rebuilt in the background (late arrivals) then finds them
# here (measured at 1M shipments: the state's build 20.6 -> 15.6 s). A smaller cache
# kept only the last quarter-million, evicted before the next rebuild reached them.
@lru_cache(maxsize=1_048_576)
def _key_tokens(text: str) -> tuple[str, ...]:
    return tuple(t for t in (phonetic_token(t) for t in name_tokens(text)) if t)


def normalise_name(text: str, *, sort_tokens: bool = False) -> str:
    """The comparison key of a name (see the module docstring); "" when the
    name has no letters or digits."""
    tokens = _key_tokens(text)
    return " ".join(sorted(tokens) if sort_tokens else tokens)


@lru_cache(maxsize=262_144)
def spelled_name(text: str) -> str:
    """The name's tokens as spelt, before the phonetic folding of step 5 (Latin,
    lowercase, company forms dropped), ordered like the tokens of
    ``normalise_name(text, sort_tokens=True)``: the i-th word of one is the
    i-th word of the other. Screening compares these too, so that a letter
    dropped or added where the folding collapses letters ("Meerez" -> "mirez"
    against "Meherez" -> "meherez") still pairs the words ("meerez" / "meherez")."""
    pairs = sorted((p, t) for t in name_tokens(text) if (p := phonetic_token(t)))
    return " ".join(t for _, t in pairs)


def normalise_names(series: pl.Series, *, sort_tokens: bool = False) -> pl.Series:
    """`normalise_name` over a String Series (nulls stay null), each distinct
    value computed once; the result keeps the Series' name and order. Within
    `shared_normalisation`, a Series equal to one normalised before (value for
    value) takes that result."""

    def compute(strings: pl.Series) -> pl.Series:
        distinct = strings.drop_nulls().unique().to_list()
        keys = [normalise_name(v, sort_tokens=sort_tokens) for v in distinct]
        return strings.replace_strict(distinct, keys, default=None, return_dtype=pl.String)

    return shared_result(("names", sort_tokens), series.cast(pl.String), compute).alias(series.name)


def shared_result(
    what: Hashable, strings: pl.Series, compute: Callable[[pl.Series], pl.Series]
) -> pl.Series:
    """`compute(strings)`, a function of the values alone that `what` names. Within
    `shared_normalisation`, a Series of at least SHARED_MIN_ROWS values equal (value
    for value) to one computed before for the same `what` takes that result."""
    memo: list[tuple[Hashable, pl.Series, pl.Series]] | None = getattr(_SHARED, "memo", None)
    if memo is None or strings.len() < SHARED_MIN_ROWS:
        return compute(strings)
    for before_what, before, out in memo:
        if (
            before_what == what
            and before.len() == strings.len()
            and before.equals(strings, null_equal=True)
        ):
            return out
    out = compute(strings)
    if len(memo) >= SHARED_MAX:
        memo.pop(0)
    memo.append((what, strings, out))
    return out


# `shared_normalisation`: the Series normalised within it (those of at least
# SHARED_MIN_ROWS values, the last SHARED_MAX of them) and their keys, per thread. A batch
# normalises the same columns several times: the parties' names for their keys
# (`features.context.party_keys`) and again for traveller linkage, the addresses
# for the network's contact keys and again for traveller linkage, the consignees'
# phones and addresses for the trader tables and again for the trader features.
SHARED_MIN_ROWS = 1024
SHARED_MAX = 8
_SHARED = threading.local()


@contextmanager
def shared_normalisation() -> Iterator[None]:
    """Within it, `normalise_names` of a Series equal to one it normalised before
    in it returns the same keys without computing them again (the same values:
    the keys are a function of the values). Nested uses share the outermost's
    memo; it is dropped on leaving the outermost. Per thread."""
    if getattr(_SHARED, "memo", None) is not None:
        yield
        return
    _SHARED.memo = []
    try:
        yield
    finally:
        _SHARED.memo = None


# Two tokens of at least this many letters are the same word when their
# rapidfuzz `ratio` reaches TOKEN_MIN_SCORE (Ismoilov / Ismailov, Aleksandr / Alexander).
TOKEN_MIN_LENGTH = 4
TOKEN_MIN_SCORE = 85.0
# The score of an initial ("a", or "sh" for Ш) against a word it begins.
INITIAL_SCORE = 90.0


def token_score(a: str, b: str) -> tuple[float, bool]:
    """Similarity 0-100 of two name tokens (phonetic keys) and whether it is an
    initial's: 100 when equal; an initial (one or two letters) matches a longer
    token it begins at `INITIAL_SCORE`; other tokens compare by rapidfuzz
    `ratio`, short ones only when equal."""
    if a == b:
        return 100.0, False
    short, other = (a, b) if len(a) <= len(b) else (b, a)
    if other == short + "a":  # feminine form (Nodir / Nodira, Karimov / Karimova)
        return 0.0, False
    if len(short) <= 2:
        return (INITIAL_SCORE if other.startswith(short) else 0.0), True
    if len(short) < TOKEN_MIN_LENGTH:
        return 0.0, False
    return float(fuzz.ratio(a, b)), False


def align_tokens(
    a: tuple[str, ...],
    b: tuple[str, ...],
    min_score: float,
    scorer: Callable[[str, str], tuple[float, bool]] | None = None,
) -> list[tuple[float, bool]] | None:
    """Match every token of the shorter name to a distinct token of the other
    (greedy, best pairs first) scoring at least `min_score` by `scorer`
    (default `token_score`): the (score, initial) of the matched pairs, or None
    when some token finds no partner."""
    score_of = scorer or token_score
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    if not short:
        return None
    pairs = sorted(
        ((*score_of(s, t), i, j) for i, s in enumerate(short) for j, t in enumerate(long_)),
        key=lambda x: x[0],
        reverse=True,
    )
    used_s: set[int] = set()
    used_l: set[int] = set()
    out: list[tuple[float, bool]] = []
    for score, initial, i, j in pairs:
        if score < min_score:
            break
        if i in used_s or j in used_l:
            continue
        used_s.add(i)
        used_l.add(j)
        out.append((score, initial))
    return out if len(out) == len(short) else None


@lru_cache(maxsize=262_144)
def names_agree(a: str, b: str, min_words: int = 1) -> bool:
    """Whether two personal names (comparison keys, any token order) can be the
    same person's: every token of the shorter name matches a distinct token of
    the other (equal, a close spelling, or an initial of it), at least two
    tokens take part and at least `min_words` of them are full words. A
    patronymic or a second given name present in one name only does not matter
    ("Abdullaev Akmal" = "Абдуллаев Акмал Рустамович" = "Абдуллаев А.Р.")."""
    ta, tb = tuple(a.split()), tuple(b.split())
    if min(len(ta), len(tb)) < 2:
        return False
    pairs = align_tokens(ta, tb, TOKEN_MIN_SCORE)
    return pairs is not None and sum(not initial for _, initial in pairs) >= min_words
