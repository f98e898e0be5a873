"""Loader tests: the real UN SC Consolidated List XML and HS nomenclature in
../shared/reference, the example national list, and broken files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from defusedxml import EntitiesForbidden

from data_contracts.loaders import ReferenceFileError, validate_watchlist
from data_contracts.loaders.hs import hs_chapters, load_hs_nomenclature
from data_contracts.loaders.national import (
    COLUMNS,
    load_national_csv,
    read_national_csv,
)
from data_contracts.loaders.un_sc import WEAK_ALIASES_NOTE, load_un_consolidated
from data_contracts.reference import HS_CHAPTERS
from data_contracts.schemas import WATCHLIST

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
UN_XML = REFERENCE / "un_sc_consolidated_2018-10-29.xml"
HS_CSV = REFERENCE / "hs_nomenclature_2022.csv"
EXAMPLE = (
    Path(__file__).resolve().parents[2]
    / "data_contracts"
    / "reference"
    / "national_watchlist_example.csv"
)


@pytest.fixture(scope="module")
def un_list() -> pl.DataFrame:
    return load_un_consolidated(UN_XML)


# --- UN SC Consolidated List ---------------------------------------------------------


@pytest.mark.reference
def test_un_list_loads_completely(un_list: pl.DataFrame) -> None:
    assert un_list.schema == WATCHLIST.polars_schema
    counts = dict(un_list["entity_type"].cast(pl.String).value_counts().iter_rows())
    assert counts == {"individual": 703, "entity": 390}
    assert un_list["entry_id"].n_unique() == 1093
    assert un_list["entry_id"].str.starts_with("UN-SC:").all()
    assert (un_list["list_name"] == "UN-SC").all()
    # The README says 729 aliases; the file holds 2,663 non-empty ALIAS_NAME
    # elements (2,086 individual: 1,491 Good and 595 Low; 577 entity a.k.a./f.k.a.),
    # 2,649 once the same spelling repeated within one entry is counted once. The
    # 594 distinct Low-quality ones are not screened (kept out of `aliases`, noted
    # in `comments`): 1,478 individual and 577 entity aliases remain.
    assert un_list["aliases"].list.len().sum() == 2055
    weak = [
        c.split(WEAK_ALIASES_NOTE)[1].split(" | ")
        for c in un_list["comments"].drop_nulls()
        if WEAK_ALIASES_NOTE in c
    ]
    assert (len(weak), sum(len(w) for w in weak)) == (215, 594)
    assert un_list["name_original_script"].drop_nulls().len() == 411
    assert un_list["listed_on"].null_count() == 0
    assert validate_watchlist(un_list) == []


@pytest.mark.reference
def test_un_spot_checks(un_list: pl.DataFrame) -> None:
    by_id = {r["entry_id"]: r for r in un_list.to_dicts()}
    ri = by_id["UN-SC:KPi.033"]
    assert ri["name"] == "RI WON HO"
    assert ri["document_numbers"] == ["381310014"]  # listed as " 381310014"
    assert ri["dates_of_birth"] == ["1964-07-17"]
    assert ri["listed_on"] == dt.date(2016, 11, 30)
    assert ri["nationalities"] == ["Democratic People's Republic of Korea"]
    assert ri["comments"].startswith("Ri Won Ho is a DPRK Ministry of State Security")
    assert by_id["UN-SC:KPi.037"]["aliases"] == ["Jang Chang Ha"]
    # Low-quality aliases ("Hani", "Abu Hamzah") are not screened, only noted.
    khattab = by_id["UN-SC:QDi.336"]
    assert khattab["aliases"] == ["Samir Ahmed al-Khayat"]
    assert khattab["comments"].startswith("Administrative amir of Al-Nusrah Front")
    assert khattab["comments"].endswith(
        "\nLow-quality aliases (not screened): Hani | Abu Hamzah | Abu-Ahmad Hadud"
    )
    abbasin = by_id["UN-SC:TAi.155"]
    assert abbasin["name"] == "ABDUL AZIZ ABBASIN"
    # Arabic script (the file mixes Arabic and Persian forms of some letters).
    assert abbasin["name_original_script"].startswith("عبد العز")
    assert len(abbasin["name_original_script"].split()) == 3
    # Entities: ENTITY_ALIAS, whitespace-normalised names.
    pad = un_list.filter(pl.col("name") == "PROPAGANDA AND AGITATION DEPARTMENT (PAD)")
    assert pad["entity_type"].cast(pl.String).to_list() == ["entity"]
    # Year-only and between-years dates of birth.
    years = un_list["dates_of_birth"].explode().drop_nulls()
    assert years.str.contains(r"^\d{4}$").any()
    assert years.str.contains(r"^\d{4}(-\d{2}-\d{2})?$").all()


def _write(tmp_path: Path, text: str, name: str = "list.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_un_malformed_xml_names_file_and_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, "<CONSOLIDATED_LIST><INDIVIDUALS><INDIVIDUAL></INDIVIDUALS>")
    with pytest.raises(ReferenceFileError, match="not well-formed XML") as info:
        load_un_consolidated(path)
    assert str(path) in str(info.value)


def test_un_non_list_xml_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "<rss><channel><title>news</title></channel></rss>")
    with pytest.raises(ReferenceFileError, match=r"root element is <rss>") as info:
        load_un_consolidated(path)
    assert str(path) in str(info.value)


def test_un_entry_without_reference_is_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "<CONSOLIDATED_LIST><INDIVIDUALS><INDIVIDUAL><DATAID>1</DATAID>"
        "<FIRST_NAME>X</FIRST_NAME></INDIVIDUAL></INDIVIDUALS></CONSOLIDATED_LIST>",
    )
    with pytest.raises(ReferenceFileError, match="no REFERENCE_NUMBER"):
        load_un_consolidated(path)


def test_un_entity_expansion_bomb_is_refused(tmp_path: Path) -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
        + "]><CONSOLIDATED_LIST><INDIVIDUALS><INDIVIDUAL><FIRST_NAME>&lol9;</FIRST_NAME>"
        "</INDIVIDUAL></INDIVIDUALS></CONSOLIDATED_LIST>"
    ).replace("&lol0;", "&lol;")
    path = _write(tmp_path, bomb)
    with pytest.raises(ReferenceFileError, match="unsafe XML") as info:
        load_un_consolidated(path)
    assert isinstance(info.value.__cause__, EntitiesForbidden)


def test_un_duplicate_reference_gets_dataid(tmp_path: Path) -> None:
    entry = (
        "<INDIVIDUAL><DATAID>{d}</DATAID><FIRST_NAME>A</FIRST_NAME><SECOND_NAME>B</SECOND_NAME>"
        "<REFERENCE_NUMBER>QDi.1</REFERENCE_NUMBER><LISTED_ON>2001-01-01</LISTED_ON>"
        "<INDIVIDUAL_DATE_OF_BIRTH><TYPE_OF_DATE>BETWEEN</TYPE_OF_DATE><FROM_YEAR>1960</FROM_YEAR>"
        "<TO_YEAR>1962</TO_YEAR></INDIVIDUAL_DATE_OF_BIRTH></INDIVIDUAL>"
    )
    path = _write(
        tmp_path,
        f"<CONSOLIDATED_LIST><INDIVIDUALS>{entry.format(d=1)}{entry.format(d=2)}</INDIVIDUALS>"
        "<ENTITIES/></CONSOLIDATED_LIST>",
    )
    frame = load_un_consolidated(path)
    assert frame["entry_id"].to_list() == ["UN-SC:QDi.1/1", "UN-SC:QDi.1/2"]
    assert frame["dates_of_birth"].to_list()[0] == ["1960", "1961", "1962"]
    assert frame["name"].to_list()[0] == "A B"


def test_un_low_quality_aliases_are_noted_not_screened(tmp_path: Path) -> None:
    def alias(tag: str, quality: str, name: str) -> str:
        return f"<{tag}><QUALITY>{quality}</QUALITY><ALIAS_NAME>{name}</ALIAS_NAME></{tag}>"

    person = (
        "<INDIVIDUAL><DATAID>1</DATAID><FIRST_NAME>ANAS</FIRST_NAME><SECOND_NAME>KHATTAB"
        "</SECOND_NAME><REFERENCE_NUMBER>QDi.1</REFERENCE_NUMBER><LISTED_ON>2014-09-23"
        "</LISTED_ON>"
        + alias("INDIVIDUAL_ALIAS", "Good", "Samir al-Khayat")
        + alias("INDIVIDUAL_ALIAS", "Low", "Hani")
        + alias("INDIVIDUAL_ALIAS", "Low", "Hani")
        + alias("INDIVIDUAL_ALIAS", "Low", "Samir al-Khayat")  # also listed as Good
        + alias("INDIVIDUAL_ALIAS", "Low", "Abu Hamzah")
        + alias("INDIVIDUAL_ALIAS", "", "")
        + "</INDIVIDUAL>"
    )
    no_comment = person.replace("QDi.1", "QDi.2").replace("<DATAID>1", "<DATAID>2")
    with_comment = person.replace("</LISTED_ON>", "</LISTED_ON><COMMENTS1> Amir. </COMMENTS1>")
    company = (
        "<ENTITY><DATAID>3</DATAID><FIRST_NAME>HANIL TRADING</FIRST_NAME><REFERENCE_NUMBER>"
        "QDe.1</REFERENCE_NUMBER><LISTED_ON>2001-01-01</LISTED_ON>"
        + alias("ENTITY_ALIAS", "a.k.a.", "Hanil Co")
        + alias("ENTITY_ALIAS", "f.k.a.", "Old Hanil")
        + "</ENTITY>"
    )
    path = _write(
        tmp_path,
        f"<CONSOLIDATED_LIST><INDIVIDUALS>{with_comment}{no_comment}</INDIVIDUALS>"
        f"<ENTITIES>{company}</ENTITIES></CONSOLIDATED_LIST>",
    )
    rows = load_un_consolidated(path).to_dicts()
    assert [r["aliases"] for r in rows] == [
        ["Samir al-Khayat"],
        ["Samir al-Khayat"],
        ["Hanil Co", "Old Hanil"],
    ]
    note = "Low-quality aliases (not screened): Hani | Abu Hamzah"
    assert [r["comments"] for r in rows] == [f"Amir.\n{note}", note, None]


# --- national CSV ---------------------------------------------------------------------


def test_national_example_loads() -> None:
    frame = load_national_csv(EXAMPLE, "EX-national")
    assert frame.schema == WATCHLIST.polars_schema
    assert frame.height == 15
    assert validate_watchlist(frame) == []
    first = frame.row(0, named=True)
    assert first["entry_id"] == "EX-national:EX-I-001"
    assert first["aliases"] == ["Abdullayev Akmal", "A. Abdullaev"]
    assert first["name_original_script"] == "Абдуллаев Акмал Рустамович"
    assert frame.filter(pl.col("reference_number") == "EX-I-004")[
        "dates_of_birth"
    ].item().to_list() == [
        "1982-07-30",
        "1983",
    ]
    assert frame["name_original_script"].str.contains(r"[А-Яа-яҚқҒғҶҷҲҳ]").sum() >= 10
    assert set(frame["entity_type"].cast(pl.String)) == {"individual", "entity"}


def test_national_missing_column_names_it(tmp_path: Path) -> None:
    header = ",".join(c for c in COLUMNS if c != "entity_type")
    path = _write(tmp_path, header + "\n", "bad.csv")
    with pytest.raises(ReferenceFileError, match=r"missing column.*entity_type") as info:
        load_national_csv(path, "XX")
    assert str(path) in str(info.value)


def test_national_bad_rows_reported_with_row_numbers(tmp_path: Path) -> None:
    lines = [
        ",".join(COLUMNS),
        "R1,individual,Good Name,,,1980,,,,2024-01-01",
        "R2,person,Bad Type,,,,,,,",
        "R3,individual,,,,,,,,",
        "R4,individual,Bad Date,,,1980-13-45,,,,",
        "R1,individual,Duplicate,,,,,,,",
        "R6,entity,Bad Listed,,,,,,,01/02/2024",
    ]
    path = _write(tmp_path, "\n".join(lines) + "\n", "rows.csv")
    result = read_national_csv(path, "XX")
    assert result.frame["reference_number"].to_list() == ["R1"]
    assert [p.row for p in result.problems] == [3, 4, 5, 6, 7]
    reasons = " | ".join(p.reason for p in result.problems)
    for fragment in (
        "entity_type 'person'",
        "name is empty",
        "not a real date",
        "duplicates row 2",
        "listed_on",
    ):
        assert fragment in reasons
    with pytest.raises(ReferenceFileError, match=r"5 bad row\(s\): row 3"):
        load_national_csv(path, "XX")


# --- HS nomenclature ----------------------------------------------------------------------


@pytest.mark.reference
def test_hs_chapters_and_arms_headings() -> None:
    frame = load_hs_nomenclature(HS_CSV)
    assert frame.columns == ["hscode", "level", "description", "parent", "section"]
    chapters = hs_chapters(frame)
    # 01-97 without the reserved 77; Comtrade's pseudo-chapter 99 and TOTAL row dropped.
    assert len(chapters) == 96 and "77" not in chapters and "99" not in chapters
    assert chapters == set(HS_CHAPTERS)
    headings = frame.filter((pl.col("level") == 4) & (pl.col("parent") == "93"))
    assert headings["hscode"].to_list() == [f"930{i}" for i in range(1, 8)]
    assert frame.filter(pl.col("hscode") == "93")["section"].item() == "XIX"
    extras = load_hs_nomenclature(HS_CSV, include_comtrade_extras=True)
    assert "99" in hs_chapters(extras)


def test_hs_missing_column_and_bad_level(tmp_path: Path) -> None:
    path = _write(tmp_path, "hscode,description\n01,x\n", "hs.csv")
    with pytest.raises(ReferenceFileError, match=r"missing column.*level"):
        load_hs_nomenclature(path)
    path = _write(tmp_path, "section,hscode,description,parent,level\nI,010,x,01,4\n", "hs2.csv")
    with pytest.raises(ReferenceFileError, match="does not match its level"):
        load_hs_nomenclature(path)
