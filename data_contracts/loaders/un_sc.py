"""Loader for the UN Security Council Consolidated Sanctions List (official XML).

The list is published by the Security Council in one XML schema
(`CONSOLIDATED_LIST/INDIVIDUALS/INDIVIDUAL` and `ENTITIES/ENTITY`, see
`un_sc_sanctions.xsd`). It is parsed with defusedxml, which refuses entity
declarations (billion-laughs and quadratic-blowup bombs) and external entities.

Mapping onto the WATCHLIST contract, one row per INDIVIDUAL or ENTITY:

- `entry_id` = ``"UN-SC:" + REFERENCE_NUMBER``; where a reference number occurs
  more than once in the file, ``"/" + DATAID`` is appended to every row sharing it.
- `name` = FIRST_NAME .. FOURTH_NAME joined by a space, whitespace normalised.
- `aliases` = every non-empty ALIAS_NAME of good quality (INDIVIDUAL_ALIAS with
  QUALITY "Good" or no quality; ENTITY_ALIAS a.k.a. and f.k.a.), whitespace
  normalised, duplicates within one entry removed, order kept.
- Weak aliases: an INDIVIDUAL_ALIAS the list marks ``<QUALITY>Low</QUALITY>``
  (595 in the list of 2018-10-29: single words such as "Hani", kunyas such as
  "Abu Hamzah") is a name the list itself rates as too weak to identify a
  person on its own. It is kept out of `aliases`, so screening never matches
  on it (a fuzzy hit of "Hanil Corporation" on "Hani" would otherwise send a
  trader to inspection), and recorded instead at the end of `comments` as
  ``Low-quality aliases (not screened): Hani | Abu Hamzah`` (the WATCHLIST
  contract has no column for an alias's quality), where an officer reviewing a
  hit on the entry still sees it. `LOW_QUALITY` names the marker.
- `dates_of_birth` = DATE (its first ten characters, the file sometimes appends a
  time-zone offset), YEAR, or every year from FROM_YEAR to TO_YEAR (only the two
  bounds when the span exceeds 30 years).
- `document_numbers` = every INDIVIDUAL_DOCUMENT/NUMBER, stripped (the list
  sometimes writes prose there, e.g. "Jordan 654781"; screening extracts the
  number tokens).
- `addresses` = STREET, CITY, STATE_PROVINCE, ZIP_CODE, COUNTRY, NOTE joined by ", ".
- `listed_on` = LISTED_ON (date part); `comments` = COMMENTS1 (then the weak
  aliases, see above).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import polars as pl
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as DefusedET

from data_contracts.loaders import ReferenceFileError, watchlist_frame

LIST_NAME = "UN-SC"
ROOT_TAG = "CONSOLIDATED_LIST"
MAX_YEAR_SPAN = 30
# QUALITY of an INDIVIDUAL_ALIAS too weak to screen on (see the module docstring).
LOW_QUALITY = "Low"
WEAK_ALIASES_NOTE = "Low-quality aliases (not screened): "

_WS = re.compile(r"\s+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_YEAR = re.compile(r"\d{4}")


def _clean(text: str | None) -> str:
    return _WS.sub(" ", text or "").strip()


def _text(elem: Element, tag: str) -> str:
    return _clean(elem.findtext(tag))


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _dates_of_birth(elem: Element, problems: list[str], where: str) -> list[str]:
    out: list[str] = []
    for dob in elem.findall("INDIVIDUAL_DATE_OF_BIRTH"):
        date = _text(dob, "DATE")
        year = _text(dob, "YEAR")
        start, end = _text(dob, "FROM_YEAR"), _text(dob, "TO_YEAR")
        if date:
            if not _DATE.match(date):
                problems.append(f"{where}: DATE {date!r} is not YYYY-MM-DD")
                continue
            out.append(date[:10])
        if year:
            if not _YEAR.fullmatch(year):
                problems.append(f"{where}: YEAR {year!r} is not YYYY")
                continue
            out.append(year)
        if start or end:
            if not (_YEAR.fullmatch(start) and _YEAR.fullmatch(end)) or int(start) > int(end):
                problems.append(f"{where}: FROM_YEAR/TO_YEAR {start!r}-{end!r} is not a range")
                continue
            first, last = int(start), int(end)
            if last - first > MAX_YEAR_SPAN:
                out.extend([start, end])
            else:
                out.extend(str(y) for y in range(first, last + 1))
    return _unique(out)


def _addresses(elem: Element, tag: str) -> list[str]:
    out = []
    for addr in elem.findall(tag):
        parts = [
            _text(addr, t)
            for t in ("STREET", "CITY", "STATE_PROVINCE", "ZIP_CODE", "COUNTRY", "NOTE")
        ]
        out.append(", ".join(p for p in parts if p))
    return _unique(out)


def _listed_on(value: str, problems: list[str], where: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        problems.append(f"{where}: LISTED_ON {value!r} is not a date")
        return None


def _entry(elem: Element, kind: str, problems: list[str]) -> dict[str, Any]:
    dataid = _text(elem, "DATAID")
    reference = _text(elem, "REFERENCE_NUMBER")
    where = f"{elem.tag} DATAID={dataid or '?'} REFERENCE_NUMBER={reference or '?'}"
    if not reference:
        problems.append(f"{where}: no REFERENCE_NUMBER")
    if not dataid:
        problems.append(f"{where}: no DATAID")
    name = _clean(
        " ".join(_text(elem, t) for t in ("FIRST_NAME", "SECOND_NAME", "THIRD_NAME", "FOURTH_NAME"))
    )
    if not name:
        problems.append(f"{where}: no name (FIRST_NAME..FOURTH_NAME all empty)")
    alias_tag = "INDIVIDUAL_ALIAS" if kind == "individual" else "ENTITY_ALIAS"
    aliases: list[str] = []
    weak: list[str] = []
    for alias in elem.findall(alias_tag):
        quality = _text(alias, "QUALITY")
        (weak if quality.casefold() == LOW_QUALITY.casefold() else aliases).append(
            _text(alias, "ALIAS_NAME")
        )
    aliases = _unique(aliases)
    # A spelling listed both as Good and as Low stays a (screened) alias.
    weak = [w for w in _unique(weak) if w not in aliases]
    individual = kind == "individual"
    comments = (elem.findtext("COMMENTS1") or "").strip()
    if weak:
        note = WEAK_ALIASES_NOTE + " | ".join(weak)
        comments = f"{comments}\n{note}" if comments else note
    return {
        "_dataid": dataid,
        "list_name": LIST_NAME,
        "reference_number": reference,
        "entity_type": kind,
        "name": name,
        "aliases": aliases,
        "name_original_script": _text(elem, "NAME_ORIGINAL_SCRIPT") or None,
        "dates_of_birth": _dates_of_birth(elem, problems, where) if individual else [],
        "nationalities": _unique([_text(v, ".") for v in elem.findall("NATIONALITY/VALUE")]),
        "document_numbers": _unique(
            [_text(d, "NUMBER") for d in elem.findall("INDIVIDUAL_DOCUMENT")]
        ),
        "addresses": _addresses(elem, "INDIVIDUAL_ADDRESS" if individual else "ENTITY_ADDRESS"),
        "listed_on": _listed_on(_text(elem, "LISTED_ON"), problems, where),
        "comments": comments or None,
    }


def parse_un_consolidated(root: Element, source: str | Path) -> pl.DataFrame:
    """Turn a parsed CONSOLIDATED_LIST element into WATCHLIST rows; raise
    `ReferenceFileError` (naming `source`) when the structure is not the list's."""
    if root.tag != ROOT_TAG:
        raise ReferenceFileError(
            source, f"root element is <{root.tag}>, expected <{ROOT_TAG}> (not a UN SC list)"
        )
    individuals = root.find("INDIVIDUALS")
    entities = root.find("ENTITIES")
    if individuals is None and entities is None:
        raise ReferenceFileError(source, f"<{ROOT_TAG}> has neither INDIVIDUALS nor ENTITIES")
    problems: list[str] = []
    rows = [_entry(e, "individual", problems) for e in root.iterfind("INDIVIDUALS/INDIVIDUAL")]
    rows += [_entry(e, "entity", problems) for e in root.iterfind("ENTITIES/ENTITY")]
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ReferenceFileError(source, f"{len(problems)} malformed entries: {shown}{more}")
    if not rows:
        raise ReferenceFileError(
            source, f"no entries: no INDIVIDUAL or ENTITY; list {LIST_NAME} is left unchanged"
        )
    counts = Counter(r["reference_number"] for r in rows)
    for row in rows:
        ref = row["reference_number"]
        row["entry_id"] = f"{LIST_NAME}:{ref}"
        if counts[ref] > 1:
            row["entry_id"] += f"/{row['_dataid']}"
    return watchlist_frame(rows)


def load_un_consolidated(path: str | Path) -> pl.DataFrame:
    """Read the UN SC Consolidated List XML at `path` into WATCHLIST rows
    (individuals first, then entities, in file order).

    Raises `ReferenceFileError` when the file is missing, is not well-formed XML,
    contains entity declarations or external references (refused by defusedxml;
    the defusedxml exception is chained as ``__cause__``), is not a consolidated
    list, or has entries without reference number, DATAID or name.
    """
    path = Path(path)
    try:
        tree = DefusedET.parse(path)
    except FileNotFoundError as exc:
        raise ReferenceFileError(path, "file not found") from exc
    except DefusedXmlException as exc:
        raise ReferenceFileError(path, f"unsafe XML refused: {exc!r}") from exc
    except ParseError as exc:
        raise ReferenceFileError(path, f"not well-formed XML: {exc}") from exc
    return parse_un_consolidated(tree.getroot(), path)
