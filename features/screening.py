"""Fuzzy screening of names (and exact screening of document numbers) against
watchlists in the WATCHLIST contract.

`WatchlistIndex.build(watchlist)` indexes every primary name, alias and
original-script name of every entry under two keys from
`features.names.normalise_name`: the tokens in written order and the tokens
sorted. `index.screen(names)` then scores each query against every indexed name
with rapidfuzz's Indel similarity (`fuzz.ratio`, 0-100) over the whole
query x index matrix (`process.cdist`, all cores, in chunks of queries):

    score = max(ratio(sorted query key, sorted name key),
                ratio(query key, name key),
                ratio(reversed query key, name key))

The sorted comparison makes the score independent of word order; the two
ordered ones rescue names whose sort order a typo in a first letter changed.
A query with initials ("A. Abdullaev") is also compared with initial forms of
every multi-word name ("abdulaev a" for "Abdullaev Akmal"); such a partial match
scores at most `INITIALS_CAP`, never 100, and is never `exact`.

Every candidate is then confirmed token by token (`tokens_align`): each token
of the name with fewer tokens must pair with a similar token of the other (Indel
similarity >= 0.7, or one edit / dropped letters in a short token, or an
initial), and the other name's unpaired tokens may hold at most 20% of its
letters (a token written as two, "Alhadi" / "Al Hadi", counts as paired). Two
tokens are compared both as keys and as spelt before the phonetic folding
(`features.names.spelled_name`), the better similarity counting: a letter
dropped where the folding collapses letters ("Meerez" -> "mirez" against
"Meherez" -> "meherez") would otherwise leave the word unpaired. A name
assembled from parts of a longer listed name, or with a word that has no
counterpart, scores at most `UNALIGNED_CAP` (80) whatever its
character-level score.

`exact` is True when the query and the name have the same normalised tokens
(same multiset, any order): the same name up to script, transliteration,
case, punctuation, company form and word order, and at least two of them. A
single word left after company forms are dropped ("TOO Sever Company" ->
"sever", which is also a listed alias) still scores 100 but is not exact: an
exact hit forces an inspection, and one common word is too thin for that.

A match is *weak* (`weak_match`) when it is not exact and rests on one word
(the shorter of the two names has a single word after company forms are
dropped: "IP Bilal" or `ООО "Адель"` against the one-word alias "Bilal" or
"Adel" of a listed individual, 100 but a common given name; an entity's
acronym such as "MID" or "LET"), or when it rests on one word and initials
(either name, as written, has fewer than two words of more than one letter:
"Ким А.А." or "Ахмедов Х.М.", the usual way CIS declarations write a person,
against "Abdul Kareem Ayeras" or "Muhammad Ahmed Khaliq": 86-90, an initial
pairing with any word of its first letter; 26 of the 27 of the 21,782 distinct
party names of a 100,000-shipment synthetic world that reached the threshold
against the real UN list were of this form), or when a company's name (one bearing a
company form such as LLC, ООО, ТОО; not the sole trader's ИП / ЧП, a natural
person) matches an alias of a listed individual: a company is not a person,
and aliases are often short, common names. Not weak: a listed entity's own
one-word name, word for word ("Machanga LLC" is "MACHANGA LTD"), and a company
bearing a listed individual's own name (primary or original-script: "TOO Kamal
Djermane" for "KAMEL DJERMANE"; a company may front for a person). A weak match
keeps its score (the model's features read it as they always did), but the
operational policy counts it as a near miss (`serving.policy`): shown, never
enough alone for an inspection.

Default threshold: `DEFAULT_THRESHOLD` = 85, chosen on the real UN SC list of
2018-10-29 (tests/features/test_screening.py). Every primary name and screened
alias of 50 listed individuals (fixed seed; the list's Low-quality aliases are
not screened, see `data_contracts.loaders.un_sc`), rewritten with
transliteration noise (y/i swapped, one letter dropped, Cyrillic spelling,
reversed word order; 825 queries), scores at least 86 for the right entry,
which is always in the top 3. Of 1,000 generated non-listed Central Asian,
Russian, Chinese and Arabic style full names, none matches above the
threshold: the two near-collisions the character-level score alone let through
(a name made of parts of a listed four-part name, 86, and Chinese "Zhang
Yongjing" against Korean "Jang Myong-Jin", 89) fail the token alignment.
Screening only proposes; an officer decides.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import polars as pl
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

from features.names import COMPANY_FORMS, normalise_name, spelled_name, to_latin

DEFAULT_THRESHOLD = 85
INITIALS_CAP = 90
# Least similarity (0-1) of two tokens that `tokens_align` pairs, and the largest
# share of the longer name's letters it may leave unpaired.
TOKEN_MIN_SIMILARITY = 0.7
MAX_UNPAIRED_SHARE = 0.2
# A candidate that fails the token alignment scores at most this (under the
# default threshold; a looser search still sees it).
UNALIGNED_CAP = 80
CHUNK_SIZE = 4096
MIN_DOCUMENT_TOKEN = 5

# A screening of at most this many names runs in Python (`screen_few`): the same
# matches, without the fixed cost of frame operations.
SMALL_QUERIES = 16
# Names whose matches an index keeps (`WatchlistIndex.memo`); past it, it starts over.
MEMO_SIZE = 1_000_000
# One match of a name: entry_id, the listed spelling matched, score, exact.
Match = tuple[str, str, int, bool]
RESULT_SCHEMA = pl.Schema(
    {
        "query_index": pl.UInt32(),
        "entry_id": pl.String(),
        "matched_name": pl.String(),
        "score": pl.UInt8(),
        "exact": pl.Boolean(),
    }
)
DOCUMENT_SCHEMA = pl.Schema(
    {"query_index": pl.UInt32(), "entry_id": pl.String(), "matched_document": pl.String()}
)

# Cyrillic letters that look like Latin ones, as typed into document numbers.
_LOOKALIKES = str.maketrans("АВЕКМНОРСТУХІ", "ABEKMHOPCTYXI")
_NON_ALNUM = re.compile(r"[^0-9A-Z]+")


def normalise_document(text: str) -> str:
    """Document number key: upper case, Cyrillic look-alikes to Latin, only A-Z0-9."""
    return _NON_ALNUM.sub("", text.upper().translate(_LOOKALIKES))


# Why a match is weak (`weak_match`).
WEAK_ONE_WORD = "one_word"
WEAK_COMPANY_INDIVIDUAL = "company_individual"
WEAK_INITIALS = "initials"
# Company forms of a natural person trading in their own name (ИП, ЧП): such a
# party is a person, not a company.
SOLE_TRADER_FORMS = frozenset({"ip", "chp"})
_WORDS = re.compile(r"[^a-z0-9]+")
# The words of a name as written (letters and digits of any script).
_WRITTEN_WORDS = re.compile(r"[^\W_]+")


@lru_cache(maxsize=262_144)
def full_words(name: str) -> int:
    """The words of `name` as written with more than one letter, company forms left
    out: "Ахмедов Х.М." 1 (an initial carries a letter, not a name; counted as
    written because transliteration spells "Х." as "kh"), "ООО Ким А.А." 1."""
    return sum(
        1
        for w in _WRITTEN_WORDS.findall(name)
        if len(w) > 1 and to_latin(w).lower() not in COMPANY_FORMS
    )


def match_words(query: str, listed: str) -> int:
    """The number of name words a match of `query` with the listed name `listed`
    rests on: the words, after company forms are dropped, of the one with fewer
    (a match that passed the token alignment pairs each of them with a word of the
    other). "IP Bilal" against "Bilal": 1."""
    return min(len(normalise_name(query).split()), len(normalise_name(listed).split()))


@lru_cache(maxsize=262_144)
def is_company_name(name: str) -> bool:
    """Whether a party's name bears a company form (LLC, ООО, ТОО, ...), other than a
    sole trader's (`SOLE_TRADER_FORMS`)."""
    words = _WORDS.sub(" ", to_latin(name).replace(".", "")).split()
    return any(w in COMPANY_FORMS and w not in SOLE_TRADER_FORMS for w in words)


def weak_match(
    query: str, listed: str, *, entity_type: str | None, exact: bool, primary: bool = False
) -> str | None:
    """Why the match of the name `query` with the listed name `listed` (of an entry
    of `entity_type`, "individual" or "entity"; `primary`: `listed` is the entry's
    own name, primary or in the original script, not an alias) is weak, or None
    when it is not (see the module docstring): `WEAK_ONE_WORD` when it rests on
    one word (`match_words`), unless it is an entity's own name word for word;
    `WEAK_INITIALS` when one word and initials are all either name holds
    (`full_words`); `WEAK_COMPANY_INDIVIDUAL` when a company's name matches an
    individual's alias. An exact match is never weak."""
    if exact:
        return None
    if match_words(query, listed) < 2:
        own_name = (
            entity_type == "entity"
            and primary
            and normalise_name(query, sort_tokens=True) == normalise_name(listed, sort_tokens=True)
        )
        return None if own_name else WEAK_ONE_WORD
    if min(full_words(query), full_words(listed)) < 2:
        return WEAK_INITIALS
    if entity_type == "individual" and not primary and is_company_name(query):
        return WEAK_COMPANY_INDIVIDUAL
    return None


def _document_keys(text: str) -> set[str]:
    """Keys under which a listed document number is found: the whole value and
    each digit-bearing token of at least `MIN_DOCUMENT_TOKEN` characters (the
    list writes prose such as "Jordan 654781" or "Passport No. 96/184442")."""
    upper = text.upper().translate(_LOOKALIKES)
    keys = {normalise_document(text)}
    for token in _NON_ALNUM.split(upper):
        if len(token) >= MIN_DOCUMENT_TOKEN and any(c.isdigit() for c in token):
            keys.add(token)
    keys.discard("")
    return keys


def _initial_variants(tokens: Sequence[str]) -> set[str]:
    """Sorted keys of a multi-word name with some words cut to their initial."""
    n = len(tokens)
    if n < 2:
        return set()
    sizes = range(1, n) if n <= 4 else range(1, 3)
    out: set[str] = set()
    for size in sizes:
        for keep in itertools.combinations(range(n), size):
            words = [t if i in keep else t[0] for i, t in enumerate(tokens)]
            out.add(" ".join(sorted(words)))
    return out


def _token_similarity(a: str, b: str) -> float:
    """0-1 similarity of two name tokens: Indel ratio; a one-letter token (an
    initial) that begins the other counts 0.9; tokens one edit apart (kit /
    cit, u / su) count at least `TOKEN_MIN_SIMILARITY`."""
    if a == b:
        return 1.0
    if (len(a) == 1 and b.startswith(a)) or (len(b) == 1 and a.startswith(b)):
        return 0.9
    ratio = float(fuzz.ratio(a, b)) / 100.0
    short, other = (a, b) if len(a) <= len(b) else (b, a)
    if Levenshtein.distance(a, b, score_cutoff=1) <= 1 or (  # one edit in a short token
        len(other) - len(short) <= 2 and short[0] == other[0] and _subsequence(short, other)
    ):  # or letters dropped (Anas / As)
        return max(ratio, TOKEN_MIN_SIMILARITY)
    return ratio


def _subsequence(short: str, other: str) -> bool:
    it = iter(other)
    return all(ch in it for ch in short)


@lru_cache(maxsize=1_048_576)
def tokens_align(query: str, name: str, query_spelled: str = "", name_spelled: str = "") -> bool:
    """Whether two name keys (any order) agree token by token.

    Every token of the name with fewer tokens must be paired with a distinct
    token of the other with a similarity of at least `TOKEN_MIN_SIMILARITY`
    (greedy, best pairs first), and the tokens of the other name left unpaired
    may make up at most `MAX_UNPAIRED_SHARE` of its letters. So "Zhang
    Yongjing" finds no partner for "yongjing" in "Jang Myong-Jin", and "Salim
    Salim Hamdan" leaves "ahmad", 5 of the 21 letters of "Salim Ahmad Salim
    Hamdan", unpaired; "Abd Alhamid" against "Abd Al Hamid" leaves only "al".

    With the names' spelled forms (`features.names.spelled_name`, same token
    order as the keys), two tokens are as similar as the better of their keys
    and their spellings: the phonetic folding can turn one dropped letter into
    a different key ("Meerez" -> "mirez", "Meherez" -> "meherez", 0.67), while
    the spellings stay one letter apart ("meerez" / "meherez", 0.92)."""
    qa, na = query.split(), name.split()
    qs, ns = query_spelled.split(), name_spelled.split()
    if len(qs) != len(qa) or len(ns) != len(na):
        qs, ns = qa, na
    swap = len(qa) > len(na)
    short, long_ = (na, qa) if swap else (qa, na)
    short_sp, long_sp = (ns, qs) if swap else (qs, ns)
    if not short:
        return False
    pairs = sorted(
        (
            (max(_token_similarity(x, y), _token_similarity(short_sp[i], long_sp[j])), i, j)
            for i, x in enumerate(short)
            for j, y in enumerate(long_)
        ),
        reverse=True,
    )
    used_s: set[int] = set()
    used_l: set[int] = set()
    used_s_order: list[int] = []
    used_l_order: list[int] = []
    for sim, i, j in pairs:
        if sim < TOKEN_MIN_SIMILARITY:
            break
        if i in used_s or j in used_l:
            continue
        used_s.add(i)
        used_l.add(j)
        used_s_order.append(i)
        used_l_order.append(j)
    if len(used_s) < len(short):
        return False
    # A token written as two in the other name ("alhadi" / "al hadi").
    partner = {j: i for i, j in zip(used_s_order, used_l_order, strict=True)}
    for u, extra in enumerate(long_):
        if u in used_l:
            continue
        for j, i in partner.items():
            whole = short[i]
            if max(fuzz.ratio(whole, extra + long_[j]), fuzz.ratio(whole, long_[j] + extra)) >= 85:
                used_l.add(u)
                break
    unpaired = sum(len(t) for j, t in enumerate(long_) if j not in used_l)
    return unpaired <= MAX_UNPAIRED_SHARE * sum(len(t) for t in long_)


def _has_initial(key: str) -> bool:
    tokens = key.split()
    return len(tokens) >= 2 and any(len(t) == 1 for t in tokens)


def _ratio_matrix(
    queries: Sequence[str], choices: Sequence[str], cutoff: int
) -> npt.NDArray[np.uint8]:
    """Indel similarity (0-100) of every query with every choice, on all cores;
    scores under `cutoff` are 0."""
    # (a few queries: one thread, which costs less than starting the others)
    workers = 1 if len(queries) <= SMALL_QUERIES else -1
    matrix: npt.NDArray[np.uint8] = process.cdist(
        queries, choices, scorer=fuzz.ratio, workers=workers, dtype=np.uint8, score_cutoff=cutoff
    )
    return matrix


def _pair_frame(
    keys: npt.NDArray[np.intp],
    names: npt.NDArray[np.intp] | npt.NDArray[np.int32],
    scores: npt.NDArray[np.uint8],
    *,
    partial: bool,
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key_index": keys.astype(np.uint32),
            "name_index": names.astype(np.int32),
            "score": scores.astype(np.uint8),
            "partial": np.full(len(keys), partial, dtype=bool),
        }
    )


def _as_list(names: Sequence[str | None] | pl.Series) -> list[str]:
    values = names.cast(pl.String).to_list() if isinstance(names, pl.Series) else list(names)
    return ["" if v is None else str(v) for v in values]


@dataclass(frozen=True)
class WatchlistIndex:
    """Names and document numbers of a watchlist, ready for screening."""

    entry_ids: tuple[str, ...]
    owner: npt.NDArray[np.int32]  # index name -> position in entry_ids
    display: tuple[str, ...]  # index name as listed
    sorted_keys: tuple[str, ...]
    plain_keys: tuple[str, ...]
    spelled_keys: tuple[str, ...]  # `spelled_name`, in the order of sorted_keys
    initials_owner: npt.NDArray[np.int32]  # initial form -> index name
    initials_keys: tuple[str, ...]
    documents: dict[str, tuple[tuple[int, str], ...]]  # key -> (entry, as listed)
    # (name as given, limit, threshold) -> its matches: names screened before
    # (`screen_few`, `prime`) are answered at once; the index never changes.
    memo: dict[tuple[str, int, int], list[Match]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, watchlist: pl.DataFrame) -> WatchlistIndex:
        """Index a WATCHLIST frame (entry_id, name, aliases, name_original_script,
        document_numbers)."""
        entry_ids: list[str] = []
        owner: list[int] = []
        display: list[str] = []
        sorted_keys: list[str] = []
        plain_keys: list[str] = []
        spelled_keys: list[str] = []
        init_owner: list[int] = []
        init_keys: list[str] = []
        documents: dict[str, list[tuple[int, str]]] = {}
        columns = ("entry_id", "name", "aliases", "name_original_script", "document_numbers")
        for pos, row in enumerate(watchlist.select(columns).iter_rows(named=True)):
            entry_ids.append(row["entry_id"])
            names = [row["name"], *(row["aliases"] or []), row["name_original_script"]]
            seen: set[str] = set()
            for name in names:
                if not name:
                    continue
                skey = normalise_name(name, sort_tokens=True)
                if not skey or skey in seen:
                    continue
                seen.add(skey)
                plain = normalise_name(name)
                owner.append(pos)
                display.append(name)
                sorted_keys.append(skey)
                plain_keys.append(plain)
                spelled_keys.append(spelled_name(name))
                for variant in _initial_variants(plain.split()):
                    init_owner.append(len(display) - 1)
                    init_keys.append(variant)
            for doc in row["document_numbers"] or []:
                for key in _document_keys(doc):
                    documents.setdefault(key, []).append((pos, doc))
        return cls(
            entry_ids=tuple(entry_ids),
            owner=np.asarray(owner, dtype=np.int32),
            display=tuple(display),
            sorted_keys=tuple(sorted_keys),
            plain_keys=tuple(plain_keys),
            spelled_keys=tuple(spelled_keys),
            initials_owner=np.asarray(init_owner, dtype=np.int32),
            initials_keys=tuple(init_keys),
            documents={k: tuple(dict.fromkeys(v)) for k, v in documents.items()},
        )

    @property
    def size(self) -> int:
        """Number of distinct indexed names (names + aliases + original scripts)."""
        return len(self.display)

    def _pairs(
        self, sorted_q: list[str], plain_q: list[str], reversed_q: list[str], cutoff: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.uint8]]:
        scores = _ratio_matrix(sorted_q, self.sorted_keys, cutoff)
        # the plain and the reversed keys against the plain names, in one call
        plain = _ratio_matrix([*plain_q, *reversed_q], self.plain_keys, cutoff)
        np.maximum(scores, plain[: len(plain_q)], out=scores)
        np.maximum(scores, plain[len(plain_q) :], out=scores)
        rows, cols = np.nonzero(scores)
        return rows, cols, scores[rows, cols]

    def screen(
        self,
        names: Sequence[str | None] | pl.Series,
        *,
        limit: int = 3,
        threshold: int = DEFAULT_THRESHOLD,
        chunk_size: int = CHUNK_SIZE,
    ) -> pl.DataFrame:
        """Best `limit` entries per query scoring at least `threshold` (0-100).

        Columns: query_index (position in `names`), entry_id, matched_name (the
        listed spelling that matched best), score, exact. Sorted by
        query_index, then score descending, exact first, entry_id. Queries with
        no match have no row."""
        if not 0 < threshold <= 100:
            raise ValueError(f"threshold must be in 1..100, got {threshold}")
        queries = _as_list(names)
        if not queries or not self.display:
            return pl.DataFrame(schema=RESULT_SCHEMA)
        if len(queries) <= SMALL_QUERIES:
            found = self.screen_few(queries, limit=limit, threshold=threshold)
            return pl.DataFrame(
                [(i, *match) for i, matches in enumerate(found) for match in matches],
                schema=RESULT_SCHEMA,
                orient="row",
            )
        # Screen each distinct (sorted, plain, spelled) key once, then map back to queries.
        keys = pl.DataFrame(
            {
                "sorted": [normalise_name(q, sort_tokens=True) for q in queries],
                "plain": [normalise_name(q) for q in queries],
                "spelled": [spelled_name(q) for q in queries],
            },
            schema={"sorted": pl.String, "plain": pl.String, "spelled": pl.String},
        ).with_row_index("query_index")
        distinct = (
            keys.filter(pl.col("sorted") != "")
            .unique(["sorted", "plain", "spelled"], keep="first", maintain_order=True)
            .drop("query_index")
            .with_row_index("key_index")
        )
        if distinct.height == 0:
            return pl.DataFrame(schema=RESULT_SCHEMA)
        ranked = self._screen_keys(
            distinct["sorted"].to_list(),
            distinct["plain"].to_list(),
            distinct["spelled"].to_list(),
            limit=limit,
            threshold=threshold,
            chunk_size=chunk_size,
        )
        return (
            keys.join(distinct, on=["sorted", "plain", "spelled"])
            .select("query_index", "key_index")
            .join(ranked, on="key_index")
            .sort(
                ["query_index", "score", "exact", "entry_id"],
                descending=[False, True, True, False],
            )
            .select(RESULT_SCHEMA.names())
            .cast(RESULT_SCHEMA)
        )

    def prime(self, names: Sequence[str | None], *, limit: int, threshold: int) -> None:
        """Screen `names` now (`screen`, any number) and keep their matches for
        `screen_few` (the feature state primes the history's party names: most
        shipments come from traders seen before). Names screened before are not
        screened again (a feature state rebuilt over the same watchlist primes the
        same names: ~1 s per 20,000 names against the UN list)."""
        queries = [
            q
            for q in dict.fromkeys(_as_list(list(names)))
            if (q, limit, threshold) not in self.memo
        ]
        if not queries:
            return
        if len(self.memo) + len(queries) > MEMO_SIZE:
            self.memo.clear()
        found: list[list[Match]] = [[] for _ in queries]
        for row in self.screen(queries, limit=limit, threshold=threshold).iter_rows():
            found[row[0]].append((row[1], row[2], int(row[3]), bool(row[4])))
        self.memo.update(
            ((q, limit, threshold), matches) for q, matches in zip(queries, found, strict=True)
        )

    def screen_few(
        self, names: Sequence[str | None], *, limit: int, threshold: int
    ) -> list[list[Match]]:
        """`screen` of a few names, in Python (no frame: an online call screens the
        three parties of one shipment): per name, its matches (entry_id,
        matched_name, score, exact), in `screen`'s order. Names screened before
        come from the memo."""
        if not 0 < threshold <= 100:
            raise ValueError(f"threshold must be in 1..100, got {threshold}")
        queries = _as_list(list(names))
        missing = [q for q in dict.fromkeys(queries) if (q, limit, threshold) not in self.memo]
        if missing:
            if len(self.memo) + len(missing) > MEMO_SIZE:
                self.memo.clear()
            found = self._screen_few(missing, limit=limit, threshold=threshold)
            self.memo.update(
                ((q, limit, threshold), matches) for q, matches in zip(missing, found, strict=True)
            )
        return [list(self.memo[(q, limit, threshold)]) for q in queries]

    def _screen_few(self, queries: list[str], *, limit: int, threshold: int) -> list[list[Match]]:
        """`screen_few` of names not in the memo."""
        keys = [
            (normalise_name(q, sort_tokens=True), normalise_name(q), spelled_name(q))
            for q in queries
        ]
        distinct = list(dict.fromkeys(k for k in keys if k[0] != ""))
        if not distinct or not self.display:
            return [[] for _ in keys]
        sorted_q, plain_q = [k[0] for k in distinct], [k[1] for k in distinct]
        rq = [" ".join(reversed(p.split())) for p in plain_q]
        # (key position, index name, score, partial): the two passes of `_screen_keys`
        rows, cols, scores = self._pairs(sorted_q, plain_q, rq, threshold)
        pairs = [
            (int(r), int(c), int(v), False) for r, c, v in zip(rows, cols, scores, strict=True)
        ]
        with_initials = [i for i, p in enumerate(plain_q) if _has_initial(p)]
        if with_initials and self.initials_keys:
            matrix = _ratio_matrix(
                [sorted_q[i] for i in with_initials], self.initials_keys, threshold
            )
            for r, c in zip(*np.nonzero(matrix), strict=True):
                capped = min(int(matrix[r, c]), INITIALS_CAP)
                if capped >= threshold:
                    pairs.append((with_initials[r], int(self.initials_owner[c]), capped, True))
        ranked: list[list[tuple[int, bool, str, str]]] = [[] for _ in distinct]
        for key, name, score, partial in pairs:
            query, listed = sorted_q[key], self.sorted_keys[name]
            if not tokens_align(query, listed, distinct[key][2], self.spelled_keys[name]):
                score = min(score, UNALIGNED_CAP)
            if score < threshold:
                continue
            exact = listed == query and not partial and " " in query
            entry = self.entry_ids[int(self.owner[name])]
            ranked[key].append((score, exact, entry, self.display[name]))
        best: dict[tuple[str, str, str], list[Match]] = {}
        for k, matches in zip(distinct, ranked, strict=True):
            matches.sort(key=lambda m: (-m[0], not m[1], m[2], m[3]))
            seen: set[str] = set()
            kept: list[Match] = []
            for score, exact, entry, shown in matches:
                if entry not in seen and len(kept) < limit:
                    seen.add(entry)
                    kept.append((entry, shown, score, exact))
            best[k] = kept
        return [best.get(k, []) for k in keys]

    def _screen_keys(
        self,
        sorted_q: list[str],
        plain_q: list[str],
        spelled_q: list[str],
        *,
        limit: int,
        threshold: int,
        chunk_size: int,
    ) -> pl.DataFrame:
        """Screen distinct normalised queries; rows carry `key_index` (position
        in `sorted_q`)."""
        frames: list[pl.DataFrame] = []
        for start in range(0, len(sorted_q), chunk_size):
            sq, pq = sorted_q[start : start + chunk_size], plain_q[start : start + chunk_size]
            rq = [" ".join(reversed(p.split())) for p in pq]
            rows, cols, scores = self._pairs(sq, pq, rq, threshold)
            frames.append(_pair_frame(rows + start, cols, scores, partial=False))
        with_initials = np.asarray(
            [i for i, p in enumerate(plain_q) if _has_initial(p)], dtype=np.intp
        )
        if len(with_initials) and self.initials_keys:
            scores = _ratio_matrix(
                [sorted_q[i] for i in with_initials], self.initials_keys, threshold
            )
            rows, cols = np.nonzero(scores)
            capped = np.minimum(scores[rows, cols], INITIALS_CAP).astype(np.uint8)
            keep = capped >= threshold
            frames.append(
                _pair_frame(
                    with_initials[rows[keep]],
                    self.initials_owner[cols[keep]],
                    capped[keep],
                    partial=True,
                )
            )
        return self._rank(pl.concat(frames), sorted_q, spelled_q, limit, threshold)

    def _rank(
        self,
        pairs: pl.DataFrame,
        sorted_q: list[str],
        spelled_q: list[str],
        limit: int,
        threshold: int,
    ) -> pl.DataFrame:
        """Best `limit` entries per query key from (key, name, score) pairs."""
        schema = pl.Schema(
            {
                "key_index": pl.UInt32(),
                **{k: v for k, v in RESULT_SCHEMA.items() if k != "query_index"},
            }
        )
        if pairs.height == 0:
            return pl.DataFrame(schema=schema)
        idx = pairs["name_index"].to_numpy()
        qidx = pairs["key_index"].to_numpy()
        index_keys = np.asarray(self.sorted_keys, dtype=object)[idx]
        query_keys = np.asarray(sorted_q, dtype=object)[qidx]
        # The character-level score found the candidates; the token alignment
        # confirms them (a name assembled from parts of a longer listed name, or
        # with a token that has no counterpart, scores at most UNALIGNED_CAP).
        query_spelled = np.asarray(spelled_q, dtype=object)[qidx]
        index_spelled = np.asarray(self.spelled_keys, dtype=object)[idx]
        aligned = np.fromiter(
            (
                tokens_align(q, k, qs, ks)
                for q, k, qs, ks in zip(
                    query_keys, index_keys, query_spelled, index_spelled, strict=True
                )
            ),
            dtype=bool,
            count=len(idx),
        )
        score = pairs["score"].to_numpy()
        score = np.where(aligned, score, np.minimum(score, UNALIGNED_CAP)).astype(np.uint8)
        keep = score >= threshold
        pairs = pairs.with_columns(pl.Series("score", score)).filter(pl.Series(keep))
        if pairs.height == 0:
            return pl.DataFrame(schema=schema)
        idx, qidx = idx[keep], qidx[keep]
        index_keys, query_keys = index_keys[keep], query_keys[keep]
        multi_word = np.fromiter((" " in k for k in query_keys), dtype=bool, count=len(qidx))
        exact = (index_keys == query_keys) & ~pairs["partial"].to_numpy() & multi_word
        entry_ids = np.asarray(self.entry_ids, dtype=object)[self.owner[idx]]
        ranked = (
            pairs.with_columns(
                entry_id=pl.Series(entry_ids, dtype=pl.String),
                matched_name=pl.Series(
                    np.asarray(self.display, dtype=object)[idx], dtype=pl.String
                ),
                exact=pl.Series(exact.astype(bool)),
            )
            .sort(
                ["key_index", "score", "exact", "entry_id", "matched_name"],
                descending=[False, True, True, False, False],
            )
            .unique(subset=["key_index", "entry_id"], keep="first", maintain_order=True)
            .filter(pl.int_range(pl.len()).over("key_index") < limit)
        )
        return ranked.select(schema.names()).cast(schema)

    def screen_documents(self, doc_numbers: Iterable[str | None] | pl.Series) -> pl.DataFrame:
        """Exact matches of document numbers (after `normalise_document`) with
        the listed ones. Columns: query_index, entry_id, matched_document."""
        values = _as_list(
            list(doc_numbers) if not isinstance(doc_numbers, pl.Series) else doc_numbers
        )
        rows = [(i, *found) for i, value in enumerate(values) for found in self.document(value)]
        return pl.DataFrame(rows, schema=DOCUMENT_SCHEMA, orient="row")

    def document(self, value: str) -> list[tuple[str, str]]:
        """The (entry_id, document as listed) pairs whose document number equals
        `value` after `normalise_document`."""
        found = self.documents.get(normalise_document(value), ())
        return [(self.entry_ids[pos], listed) for pos, listed in found]
