"""A watchlist match that rests on one word and initials is weak. CIS declarations
write a person as "Surname I.O." ("Ким А.А."), and an initial pairs with any listed
word of its letter. Found in review: against the real UN SC list, 26 of the 27
distinct party names of a 100,000-shipment synthetic world that reached the alert
threshold were of this form, e.g. "Ким А.А." against "Abdul Kareem Ayeras" (88).
Each sent its shipment to the red lane. Such a match keeps its score and is shown,
but counts as a near miss. The listed person's name in full still alerts. Checked
over HTTP on SQLite and PostgreSQL, with entries of the real list."""

from __future__ import annotations

import pytest

from features.screening import (
    DEFAULT_THRESHOLD,
    WEAK_INITIALS,
    WEAK_ONE_WORD,
    WatchlistIndex,
    full_words,
    weak_match,
)
from serving import policy
from tests.serving.conftest import Api, Samples
from tests.serving.test_uat2_watchlists import _ingest
from tests.serving.test_watchlist_one_word import (
    UN_XML,
    _extract,
    _record,
    _weak_on_page,
)
from tests.serving.test_watchlists_api import _detail, _upload

pytestmark = pytest.mark.skipif(
    not UN_XML.exists(), reason="the real UN SC list is not in ../shared"
)

# ABDUL KAREEM AYERAS's entry (QDi.248) and DOKU KHAMATOVICH UMAROV (QDi.290).
REFERENCES = {"QDi.248", "QDi.290"}


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("Ким А.А.", 1),
        ("Ахмедов Х.М.", 1),  # (transliterated, "Х." is "kh": counted as written)
        ("Шамсиев Ш. Ю.", 1),
        ('ООО "Ким А.А."', 1),  # (company forms are no word)
        ("Abdul Kareem A.", 2),
        ("Doku Umarov", 2),
        ("IP Bilal", 1),
    ],
)
def test_full_words(name: str, words: int) -> None:
    assert full_words(name) == words


def test_weak_reasons() -> None:
    def why(query: str, listed: str) -> str | None:
        return weak_match(query, listed, entity_type="individual", exact=False, primary=True)

    assert why("Ким А.А.", "Abdul Kareem Ayeras") == WEAK_INITIALS
    assert why("Омаров Х.Д.", "DOKU KHAMATOVICH UMAROV") == WEAK_INITIALS
    assert why("Abdul Kareem A.", "Abdul Kareem Ayeras") is None
    assert why("Doku Umarov", "DOKU KHAMATOVICH UMAROV") is None
    assert why("IP Bilal", "Bilal") == WEAK_ONE_WORD  # (one word: its own reason)
    assert weak_match("Ким А.А.", "Ким А.А.", entity_type=None, exact=True) is None


def test_initials_forms_are_near_misses_the_full_name_alerts(
    world_api: Api, samples: Samples
) -> None:
    api = world_api
    xml = _extract(REFERENCES)
    loaded = _upload(api, "un", xml, "application/xml")
    assert loaded.status_code == 200 and loaded.json()["entries"] == 2, loaded.text
    i = 9
    _ingest(
        api,
        _record(samples, i, "INIT-KIM", consignee_name="Ким А.А."),
        _record(samples, i, "INIT-OMAROV", consignee_name="Омаров Х.Д."),
        _record(samples, i, "INIT-FULL", consignee_name="Umarov Doku"),
    )
    for sid, entry in (("INIT-KIM", "UN-SC:QDi.248"), ("INIT-OMAROV", "UN-SC:QDi.290")):
        d = _detail(api, sid)
        w = d["watchlist"]
        # the score stays (the features read it), at or above the alert threshold
        assert w["exact"] is False and w["best_score"] >= DEFAULT_THRESHOLD, (sid, w)
        match = w["match"]
        assert match["entry_id"] == entry, (sid, match)
        assert match["weak"] is True and match["weak_reason"] == WEAK_INITIALS, sid
        # nothing from the watchlist in the priority or the lane
        assert d["must_inspect"] is False and d["rule_hits"] == [], sid
        assert d["priority"] == pytest.approx(d["probability"]), sid
        assert d["lane"] == policy.lane(d["probability"]) and d["lane"] != "red", sid
        assert "one word and initials" in _weak_on_page(api, sid)

    # the listed person's name, two words of it in another order: an alert, red
    full = _detail(api, "INIT-FULL")
    assert full["watchlist"]["match"]["entry_id"] == "UN-SC:QDi.290"
    assert full["watchlist"]["match"]["weak"] is False
    assert full["lane"] == "red"


def test_the_review_names_reach_the_threshold_and_are_weak() -> None:
    """The initials forms of the review against the whole real list: each reaches
    the threshold (the case is real) and each match is weak."""
    from data_contracts.loaders.un_sc import load_un_consolidated
    from features.watchlist import _weak

    un = load_un_consolidated(UN_XML)
    names = ["Ким А.А.", "Пак А.А.", "Ахмедов Х.М.", "Касымов Р.А.", "Омаров Х.Д."]
    hits = WatchlistIndex.build(un).screen(names, limit=1)
    assert sorted(hits["query_index"].to_list()) == list(range(len(names)))
    for q, entry, matched, exact, score in hits.select(
        "query_index", "entry_id", "matched_name", "exact", "score"
    ).iter_rows():
        assert score >= DEFAULT_THRESHOLD and not exact, names[q]
        assert _weak(names[q], matched, entry, exact, un) == WEAK_INITIALS, names[q]
