"""The evaluation report's figures say what they show (review of stop 24, 4a-f).

- a: the reliability plot and page say that the model (trained weighted
  1/selection probability) predicts the rate of all traffic, plot the weighted
  random share beside the inspected shipments, on log axes, and the page lists
  each bin's shipments and findings;
- b: the score histogram's first bar holds every score <= 1e-6, is labelled so,
  and its count is said;
- c: the per-typology chart and table give n per typology and list the typologies
  the test window holds none of;
- d: the disparity plot draws each group's selection and trafficking rates as
  ratios to the average, with its counts;
- e: categorical features get no low-to-high colour in the SHAP beeswarm, and the
  page says which shipments it covers and that its axis is in log-odds;
- f: the model card gives the positives of each window.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure

from models.disparity import disparity_caption, plot_disparity, selection_by_group
from models.evaluate import Evaluation, evaluate, inverse_probability
from models.report import (
    ABSENT,
    CALIBRATION_NOTE,
    FLOOR_LABEL,
    LOWEST_SCORE,
    categorical_inputs,
    plot_calibration,
    plot_scores,
    plot_shap,
    plot_typologies,
    score_caption,
    shap_caption,
    write_report,
)

# --------------------------------------------------------------------------- helpers


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure saved while the test runs (saving goes on as usual)."""
    saved: list[Figure] = []
    save = Figure.savefig

    def keep(fig: Figure, *args: Any, **kwargs: Any) -> None:
        saved.append(fig)
        save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


class _Tables(HTMLParser):
    """The page's tables (cells as text) with the heading before each."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._heading = ""
        self._in_heading = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("h2", "h3"):
            self._heading, self._in_heading = "", True
        elif tag == "table":
            self.tables.append((self._heading, []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "h3"):
            self._in_heading = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self._heading += data
        if self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return {heading.strip(): rows for heading, rows in parser.tables}


def _table(page: str, starts: str) -> list[list[str]]:
    (rows,) = [rows for heading, rows in _tables(page).items() if heading.startswith(starts)]
    return rows


START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _window(n: int = 600) -> tuple[pl.DataFrame, np.ndarray]:
    """Inspected shipments of a test window: a third drawn at random, with two
    selection probabilities (the random share's weights differ), scores over ten
    decades (most far below 1e-6), findings more likely high up."""
    rng = np.random.default_rng(7)
    scores = 10 ** rng.uniform(-12, -0.2, n)
    labels = (rng.random(n) < np.clip(scores * 3, 0.02, 0.9)).astype(int)
    random = rng.random(n) < 0.35
    frame = pl.DataFrame(
        {
            "shipment_id": [f"S{i}" for i in range(n)],
            "declared_at": [START + dt.timedelta(hours=i) for i in range(n)],
            "label": labels,
            "selection_method": np.where(random, "random", "rule"),
            "selection_probability": np.where(
                random, np.where(rng.random(n) < 0.5, 0.02, 0.1), 1.0
            ),
        }
    )
    return frame, scores


def _truth(test: pl.DataFrame) -> pl.DataFrame:
    """Every finding traffics: ammo_mixed for even rows, parts_misdeclared for odd;
    postal_split is a typology of the world with no shipment in the window."""
    found = test.with_row_index().filter(pl.col("label") == 1)
    in_window = found.select(
        "shipment_id",
        pl.lit(True).alias("is_trafficking"),
        pl.when(pl.col("index") % 2 == 0)
        .then(pl.lit("ammo_mixed"))
        .otherwise(pl.lit("parts_misdeclared"))
        .alias("typology"),
    )
    elsewhere = pl.DataFrame(
        {"shipment_id": ["ELSEWHERE"], "is_trafficking": [True], "typology": ["postal_split"]}
    )
    return pl.concat([in_window, elsewhere])


def _evaluation(truth: bool = True) -> tuple[Evaluation, pl.DataFrame, np.ndarray]:
    test, scores = _window()
    ev = evaluate(
        model_version="1",
        test=test,
        test_scores=scores,
        window_shipments=test.select("shipment_id"),
        window_scores=scores,
        truth=_truth(test) if truth else None,
    )
    return ev, test, scores


def _as_int(cell: str) -> int:
    return int(cell.replace(",", ""))


# --------------------------------------------------------------------------- a


def test_the_page_lists_each_reliability_bin_with_its_shipments_and_findings(
    tmp_path: Path,
) -> None:
    ev, test, scores = _evaluation()
    page = write_report(ev, tmp_path, {"Reliability": "calibration.png"}, {}).read_text()
    labels = test["label"].to_numpy()
    rows = _table(page, f"All {test.height:,} inspected")[1:]
    # bins of equal count by score, every inspected shipment in one of them
    order = np.argsort(scores)
    expected = np.array_split(order, 10)
    assert [_as_int(r[2]) for r in rows] == [len(c) for c in expected]
    assert [_as_int(r[3]) for r in rows] == [int(labels[c].sum()) for c in expected]
    assert sum(_as_int(r[2]) for r in rows) == ev.n_inspected
    assert sum(_as_int(r[3]) for r in rows) == ev.n_positive

    random = (test["selection_method"] == "random").to_numpy()
    rows = _table(page, f"Random share ({int(random.sum()):,} drawn")[1:]
    assert sum(_as_int(r[2]) for r in rows) == int(random.sum())
    assert sum(_as_int(r[3]) for r in rows) == int(labels[random].sum())
    weights = inverse_probability(test["selection_probability"].to_numpy())[random]
    # the traffic the draws stand for, and the weighted rate the model predicts
    assert sum(_as_int(r[4]) for r in rows) == pytest.approx(weights.sum(), abs=len(rows))
    bins = ev.calibration_random_share
    assert bins is not None
    first = np.argsort(scores[random])[: int(bins["count"][0])]
    rate = (weights[first] * labels[random][first]).sum() / weights[first].sum()
    assert bins["observed"][0] == pytest.approx(rate)
    # the page says why the inspected shipments' points sit above the diagonal
    assert "predicts the finding rate over all traffic" in CALIBRATION_NOTE
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert data["calibration_random_share"]["count"] == bins["count"]


def test_the_reliability_plot_is_on_log_axes_with_the_random_share_beside(
    tmp_path: Path, figures: list[Figure]
) -> None:
    ev, _, _ = _evaluation()
    plot_calibration(ev, tmp_path / "calibration.png")
    (fig,) = figures
    inspected, random = fig.axes
    for ax in (inspected, random):
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        # the bins spread over the decades the scores span (none collapsed onto 0)
        low, high = ax.get_xlim()
        assert low < min(ev.calibration["predicted"]) and high >= 1
    assert "random share" in random.get_title() and "weighted" in random.get_title()
    assert f"10 bins of {int(min(ev.calibration['count']))}" in inspected.get_title()
    assert "of all traffic" in fig.get_suptitle()
    # each bin annotated with its findings
    notes = [t.get_text() for t in inspected.texts]
    assert notes == [f"{k:,.0f}" for k in ev.calibration["findings"]]


# --------------------------------------------------------------------------- b


def test_the_first_bar_holds_every_score_at_most_1e6_and_says_so(
    tmp_path: Path, figures: list[Figure]
) -> None:
    test, scores = _window()
    labels = test["label"].to_numpy()
    bars = plot_scores(scores, labels, tmp_path / "scores.png")
    (fig,) = figures
    ax = fig.axes[0]
    assert bars.floor == LOWEST_SCORE
    for name, value in (("no finding", 0), ("finding", 1)):
        own = scores[labels == value]
        assert bars.below[name] == int((own <= LOWEST_SCORE).sum()) > 0
        assert bars.shares[name][0] == pytest.approx(bars.below[name] / len(own))
    # the label "≤ 1e-6" sits under the first bar, which lies left of the axis' 1e-6
    ticks = dict(zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks(), strict=True))
    assert bars.edges[0] < ticks[FLOOR_LABEL] < bars.edges[1] == LOWEST_SCORE
    assert not any(t.startswith("1e-6") for t in ticks)
    first = [c.patches[0] for c in ax.containers]
    assert all(p.get_hatch() for p in first)
    # its count is said under the plot and on the page
    said = " ".join(t.get_text() for t in fig.texts)
    caption = score_caption(bars)
    for name, who in (("no finding", "without a finding"), ("finding", "with a finding")):
        n, total = bars.below[name], bars.counts[name]
        assert f"{name} {n:,} of {total:,}" in said
        assert f"{n:,} of the {total:,} shipments {who}" in caption
    page = write_report(
        _evaluation()[0], tmp_path, {"Score distribution": "scores.png"}, {"scores.png": caption}
    ).read_text()
    assert f"{bars.below['finding']:,} of the {bars.counts['finding']:,} shipments with" in page


def test_without_scores_below_1e6_there_is_no_such_bar(
    tmp_path: Path, figures: list[Figure]
) -> None:
    scores = np.array([2e-6, 1e-4, 0.01, 0.2, 0.9])
    bars = plot_scores(scores, np.array([0, 0, 0, 1, 1]), tmp_path / "scores.png")
    assert bars.floor is None and bars.below == {} and score_caption(bars) == ""
    labels = [t.get_text() for t in figures[0].axes[0].get_xticklabels()]
    assert FLOOR_LABEL not in labels
    assert bars.edges[0] == pytest.approx(2e-6)


# --------------------------------------------------------------------------- c


def test_each_typology_has_its_n_and_the_absent_ones_are_listed(
    tmp_path: Path, figures: list[Figure]
) -> None:
    ev, test, _ = _evaluation()
    truth = _truth(test)
    n = dict(
        truth.filter(pl.col("shipment_id") != "ELSEWHERE").group_by("typology").len().iter_rows()
    )
    assert ev.truth is not None and ev.truth["absent_typologies"] == ["postal_split"]
    page = write_report(ev, tmp_path, {}).read_text()
    rows = {r[0]: r[1:] for r in _table(page, "Per typology")[1:]}
    assert set(rows) == {"ammo_mixed", "parts_misdeclared", "postal_split"}
    per = ev.at_capacity["5%"]["per_typology"]
    for typology in ("ammo_mixed", "parts_misdeclared"):
        shipments, caught, recall = rows[typology]
        assert _as_int(shipments) == n[typology]
        assert int(caught) == round(per[typology] * n[typology])
        assert recall == f"{per[typology]:.3f}"
    assert rows["postal_split"] == ["0", ABSENT]

    assert plot_typologies(ev, tmp_path / "typologies.png")
    ax = figures[0].axes[0]
    labels = {t.get_text() for t in ax.get_yticklabels()}
    assert labels == {
        f"ammo_mixed (n={n['ammo_mixed']})",
        f"parts_misdeclared (n={n['parts_misdeclared']})",
        "postal_split (n=0)",
    }
    notes = [t.get_text() for t in ax.texts]
    assert ABSENT in notes
    assert f"{round(per['ammo_mixed'] * n['ammo_mixed'])} of {n['ammo_mixed']} caught" in notes


# --------------------------------------------------------------------------- d


def _offices() -> tuple[pl.DataFrame, np.ndarray, pl.DataFrame]:
    """Office Z is selected five times the average with no trafficking; office R
    holds all the trafficking and is selected as often as the average."""
    offices = ["Z"] * 200 + ["R"] * 400 + ["Q"] * 400
    scores = np.zeros(1000)
    scores[:50] = 1.0  # Z: 50 of 200 selected at 10 %
    scores[200:240] = 0.9  # R: 40 of 400
    scores[600:610] = 0.8  # Q: 10 of 400
    window = pl.DataFrame(
        {
            "shipment_id": [f"S{i}" for i in range(1000)],
            "office_code": offices,
            "origin_country": ["CN"] * 1000,
        }
    )
    bad = [f"S{i}" for i in range(300, 320)]  # 20 in R
    return window, scores, pl.DataFrame({"shipment_id": bad, "is_trafficking": [True] * 20})


def test_the_disparity_plot_draws_ratios_to_the_average_with_counts(
    tmp_path: Path, figures: list[Figure]
) -> None:
    window, scores, truth = _offices()
    table = selection_by_group(window, scores, k=0.10, truth=truth, min_shipments=100)
    office = {r["group"]: r for r in table.filter(group_by="office_code").iter_rows(named=True)}
    assert office["Z"]["rate_ratio"] == pytest.approx((50 / 200) / 0.10)
    assert office["Z"]["trafficking_ratio"] == 0.0
    assert office["R"]["trafficking_ratio"] == pytest.approx((20 / 400) / (20 / 1000))
    plot_disparity(table, tmp_path / "disparity.png", 0.10)
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    # the most over-selected group on top, with its shipments, selected and trafficking
    assert labels[-1] == "Z  (n=200; 50 selected; 0 trafficking)"
    points = {
        c.get_label(): dict(zip(labels, c.get_offsets()[:, 0], strict=True))
        for c in ax.collections
        if c.get_label() and not c.get_label().startswith("_")
    }
    red = points["true trafficking rate / average"]
    blue = points["selection rate at 10% / average"]
    for name, row in office.items():
        (label,) = [lb for lb in labels if lb.startswith(f"{name}  ")]
        assert blue[label] == pytest.approx(row["rate_ratio"])
        assert red[label] == pytest.approx(row["trafficking_ratio"])
    caption = disparity_caption(table, 0.10)
    assert "Selected beyond their risk: Z (office_code) 2.5x the average selection" in caption
    assert "R (office_code)" not in caption


# --------------------------------------------------------------------------- e


def test_categorical_features_are_grey_not_low_to_high(
    tmp_path: Path, figures: list[Figure]
) -> None:
    rng = np.random.default_rng(1)
    n = 400
    names = ["log_value_usd", "mode", "origin_country_code", "transit_count"]
    x = np.column_stack(
        [
            rng.normal(10, 2, n),
            rng.integers(1, 7, n),
            rng.integers(1, 200, n),
            rng.integers(0, 4, n),
        ]
    ).astype(float)
    x[:5, 0] = np.nan
    contrib = np.column_stack([rng.normal(0, s, n) for s in (3, 2, 1.5, 1)] + [np.full(n, -5.0)])
    plot_shap(contrib, x, names, tmp_path / "shap.png", ["mode", "origin_country_code"])
    ax = figures[0].axes[0]
    rows = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)}
    assert set(rows) == {
        "log_value_usd",
        "mode (category)",
        "origin_country_code (category)",
        "transit_count",
    }

    def dots(label: str) -> list[Any]:
        return [
            c
            for c in ax.collections
            if len(c.get_offsets()) and abs(np.mean(c.get_offsets()[:, 1]) - rows[label]) < 0.5
        ]

    for label in ("mode (category)", "origin_country_code (category)"):
        (grey,) = dots(label)  # one set of dots, all of them
        assert len(grey.get_offsets()) == n
        assert grey.get_array() is None  # no colour scale
        assert np.allclose(grey.get_facecolors()[:, :3], 0x77 / 255)
    coloured = [c for c in dots("transit_count") if c.get_array() is not None]
    assert len(coloured) == 1 and len(coloured[0].get_array()) == n
    assert "log-odds" in ax.get_xlabel()

    said = shap_caption(1000, 1226, ["mode", "origin_country_code"])
    assert "1,000 inspected shipments of the test window, drawn at random" in said
    assert "from its 1,226" in said and "log-odds" in said
    assert "categorical features (mode, origin_country_code)" in said
    assert "all 300 inspected shipments of the test window" in shap_caption(300, 300, [])


def test_the_categorical_inputs_are_the_ones_the_booster_was_trained_with() -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(2)
    n = 500
    x = np.column_stack([rng.normal(size=n), rng.integers(1, 5, n), rng.integers(1, 9, n)])
    y = (x[:, 1] == 2).astype(int)
    names = ["log_value_usd", "extra_regime", "mode"]
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5},
        lgb.Dataset(x, y, feature_name=names, categorical_feature=["extra_regime", "mode"]),
        num_boost_round=3,
    )
    assert categorical_inputs(booster, names) == ["extra_regime", "mode"]
    # and as the registry reloads it
    again = lgb.Booster(model_str=booster.model_to_string())
    assert categorical_inputs(again, names) == ["extra_regime", "mode"]


# --------------------------------------------------------------------------- f and the page


def test_the_card_gives_the_positives_of_each_window_and_the_page_its_figures(
    web_world: Path,
) -> None:
    from data_contracts.settings import DataLayout
    from models.assess import read_features, read_outcomes
    from models.dataset import LABEL, Target, labelled, time_split

    layout = DataLayout(web_world)
    folder = layout.reports / "evaluation" / "v1"
    card = json.loads((folder / "model_card.json").read_text())
    split = time_split(labelled(read_features(layout), read_outcomes(layout), Target.ARMS))
    frames = {"train": split.train, "valid": split.valid, "test": split.test}
    positives = {k: int(f[LABEL].sum()) for k, f in frames.items()}
    assert card["positives"] == positives
    assert card["rows"] == {k: f.height for k, f in frames.items()}
    assert positives["test"] == card["metrics"]["n_positive"]
    markdown = (folder / "model_card.md").read_text()
    for window, frame in frames.items():
        n = positives[window]
        noun = "arms finding" if n == 1 else "arms findings"
        assert re.search(
            rf"^- {window}: .* \({frame.height:,} inspected shipments, {n:,} {noun}\)$",
            markdown,
            re.M,
        ), markdown

    # the page `caravan train` wrote again once the version was known keeps each
    # figure's text: the score plot's first bar, the SHAP plot's shipments and axis
    page = (folder / "index.html").read_text()
    captions = json.loads((folder / "figures.json").read_text())
    for text in captions.values():
        if text:
            assert _escape(text) in page
    assert "log-odds" in captions["shap_beeswarm.png"]
    assert "inspected shipments of the test window" in captions["shap_beeswarm.png"]
    assert "(category)" in captions["shap_beeswarm.png"]
    data = json.loads((folder / "evaluation.json").read_text())
    rows = _table(page, f"All {data['n_inspected']:,} inspected")[1:]
    assert sum(_as_int(r[2]) for r in rows) == data["n_inspected"]
    assert sum(_as_int(r[3]) for r in rows) == data["n_positive"]
    typologies = {r[0]: r[1] for r in _table(page, "Per typology")[1:]}
    assert {t: _as_int(v) for t, v in typologies.items() if v != "0"} == data["truth"]["typologies"]


def _escape(text: str) -> str:
    import html

    return html.escape(text)
