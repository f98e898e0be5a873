"""Small reference tables Caravan needs at run time (ISO codes, HS chapters,
the vocabulary of goods descriptions that say nothing).

ISO 3166 and ISO 4217 come from pycountry. The HS chapter list is the set of
chapters of the HS 2022 nomenclature (01-97; chapter 77 is reserved for future
use); a test checks it against the real nomenclature file in shared/reference.
"""

from __future__ import annotations

import re
from functools import cache

import pycountry

COUNTRIES: frozenset[str] = frozenset(c.alpha_2 for c in pycountry.countries)
CURRENCIES: frozenset[str] = frozenset(c.alpha_3 for c in pycountry.currencies)

HS_CHAPTERS: frozenset[str] = frozenset(f"{n:02d}" for n in range(1, 98) if n != 77)

HS_CODE_PATTERN = r"\d{6,10}"
HS_CHAPTER_PATTERN = "(?:" + "|".join(sorted(HS_CHAPTERS)) + r")\d{4,8}"


def hs_code_problem(value: str) -> str | None:
    """Why an HS code is not acceptable, or None when it is."""
    if not re.fullmatch(HS_CODE_PATTERN, value):
        return f"HS code '{value}' must be 6 to 10 digits"
    if value[:2] not in HS_CHAPTERS:
        return f"HS code '{value}' names chapter {value[:2]}, which does not exist in HS 2022"
    return None


# Words that, alone or together, say nothing about what the goods are. Modern
# advance-cargo systems (for example the US CBP and EU ICS2 guidance on
# acceptable descriptions) reject filings whose description is only such words.
VAGUE_WORDS_EN = (
    "parts",
    "part",
    "spare",
    "spares",
    "accessories",
    "accessory",
    "gift",
    "gifts",
    "present",
    "presents",
    "sample",
    "samples",
    "see",
    "as",
    "per",
    "invoice",
    "invoices",
    "attached",
    "general",
    "cargo",
    "goods",
    "merchandise",
    "various",
    "misc",
    "miscellaneous",
    "assorted",
    "mixed",
    "consolidated",
    "consolidation",
    "said",
    "to",
    "contain",
    "contains",
    "stc",
    "fak",
    "freight",
    "all",
    "kinds",
    "items",
    "item",
    "products",
    "product",
    "stuff",
    "commodities",
    "supplies",
    "materials",
    "equipment",
    "machinery",
    "electronics",
    "textiles",
    "household",
    "foodstuffs",
    "chemicals",
    "appliances",
    "other",
    "others",
    "etc",
    "new",
    "used",
    "for",
    "and",
    "of",
    "the",
    "a",
    "pcs",
    "pieces",
    "lot",
    "set",
    "sets",
    "n/a",
    "na",
    "none",
    "unknown",
)
VAGUE_WORDS_RU = (
    "запчасти",
    "запчасть",
    "запасные",
    "запасных",
    "части",
    "частей",
    "комплектующие",
    "подарок",
    "подарки",
    "подарочный",
    "образцы",
    "образец",
    "образцов",
    "товар",
    "товары",
    "товаров",
    "груз",
    "грузы",
    "сборный",
    "генеральный",
    "разное",
    "разные",
    "прочее",
    "прочие",
    "тнп",
    "народного",
    "потребления",
    "см",
    "смотри",
    "инвойс",
    "инвойсу",
    "инвойса",
    "согласно",
    "по",
    "оборудование",
    "материалы",
    "изделия",
    "и",
    "для",
    "шт",
    "новые",
    "новый",
)
VAGUE_WORDS = VAGUE_WORDS_EN + VAGUE_WORDS_RU

_SEP = r"[\W\d_]"


@cache
def vague_description_regex() -> str:
    """A regex (valid in both Rust/Polars and Python) matching a description made
    only of vague words, or with no letters at all."""
    words = sorted({re.escape(w) for w in VAGUE_WORDS}, key=len, reverse=True)
    alternation = "|".join(words)
    return rf"(?i)^(?:{_SEP}*(?:(?:{alternation})\b{_SEP}*)+|{_SEP}+)$"


def is_vague_description(text: str) -> bool:
    return re.match(vague_description_regex(), text) is not None
