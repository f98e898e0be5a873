"""The report's score distribution shows where the findings score (UAT2 DS F2).

Densities over log-spaced bins divided each bar by its linear width, so the one
finding scored 7e-05 made the tallest bar and the findings scored above 0.5 were
invisible. The bars are now, per class, the share of its shipments in each bin.
The tests read the bars off the figure `plot_scores` draws and saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from models.report import plot_scores

# The tester's 19 findings of the test window (8 above 0.5, 13 above 0.01).
# fmt: off
FINDINGS = np.array([
    7e-05, 2.3e-04, 2.7e-04, 4.9e-04, 1.2e-03, 0.0079, 0.0127, 0.0288, 0.057, 0.154,
    0.209, 0.507, 0.679, 0.710, 0.713, 0.725, 0.735, 0.869, 0.895,
])
# fmt: on
N_CLEAN = 3_002


@dataclass(frozen=True)
class Drawn:
    left: dict[str, np.ndarray]  # class -> the bars' left edges
    right: dict[str, np.ndarray]
    height: dict[str, np.ndarray]
    ylabel: str
    legend: list[str]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Drawn]:
    """The bars of every figure saved while the test runs (read from the figure;
    saving goes on as usual)."""
    figures: list[Drawn] = []
    save = Figure.savefig

    def keep(fig: Figure, *args: object, **kwargs: object) -> None:
        ax = fig.axes[0]
        bars: dict[str, list] = {}
        for container in ax.containers:
            name = container.patches[0].get_label().split(" (")[0]
            bars[name] = list(container.patches)
        figures.append(
            Drawn(
                {n: np.array([b.get_x() for b in bs]) for n, bs in bars.items()},
                {n: np.array([b.get_x() + b.get_width() for b in bs]) for n, bs in bars.items()},
                {n: np.array([b.get_height() for b in bs]) for n, bs in bars.items()},
                ax.get_ylabel(),
                [t.get_text() for t in ax.get_legend().get_texts()],
            )
        )
        save(fig, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _window() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    # "no finding": most around 1.5e-4, two very low (below the plot's lowest edge)
    clean = np.concatenate([np.exp(rng.normal(np.log(1.5e-4), 1.2, N_CLEAN - 2)), [1e-9, 3e-8]])
    scores = np.concatenate([np.clip(clean, 0, 1), FINDINGS])
    labels = np.concatenate([np.zeros(len(clean), dtype=int), np.ones(len(FINDINGS), dtype=int)])
    return scores, labels


def _share_between(bars: Drawn, name: str, low: float, high: float) -> float:
    """The summed heights of the class's bars whose bin lies within [low, high]."""
    inside = (bars.left[name] >= low) & (bars.right[name] <= high * (1 + 1e-9))
    return float(bars.height[name][inside].sum())


def test_bars_are_each_class_share_per_bin(tmp_path: Path, drawn: list[Drawn]) -> None:
    scores, labels = _window()
    plot_scores(scores, labels, tmp_path / "scores.png")
    (bars,) = drawn
    assert bars.ylabel == "share of the class's shipments"
    assert bars.legend == [f"no finding ({N_CLEAN:,})", "finding (19)"]
    # every shipment counted once, in its own class (the two below the lowest edge too)
    for name, value in (("no finding", 0), ("finding", 1)):
        assert np.isclose(bars.height[name].sum(), 1.0)
        edges = np.append(bars.left[name], bars.right[name][-1])
        own = np.clip(scores[labels == value], edges[0], 1.0)
        counts, _ = np.histogram(own, bins=edges)
        np.testing.assert_allclose(bars.height[name], counts / len(own))
    assert bars.height["no finding"][0] >= 2 / N_CLEAN


def test_the_high_scored_findings_are_where_they_score(tmp_path: Path, drawn: list[Drawn]) -> None:
    scores, labels = _window()
    plot_scores(scores, labels, tmp_path / "scores.png")
    (bars,) = drawn
    finding = bars.height["finding"]
    # 8 of the 19 findings scored above 0.5: their bars hold 8/19 of the class ...
    assert np.isclose(_share_between(bars, "finding", 0.5, 1.0), 8 / 19)
    # ... the tallest finding bar is among them (6 between 0.71 and 0.9), and no
    # finding bar is smaller than one finding
    assert bars.left["finding"][int(np.argmax(finding))] >= 0.5
    assert np.isclose(finding.max(), 6 / 19)
    assert finding[finding > 0].min() >= 1 / 19 - 1e-12
    # the single finding at 7e-05 is one shipment's share, not the tallest bar
    first = (bars.left["finding"] <= 7e-05) & (bars.right["finding"] > 7e-05)
    assert np.isclose(finding[first].sum(), 1 / 19)
    # the "no finding" shipments sit low (almost none above 0.01), the findings not
    assert _share_between(bars, "no finding", 0.01, 1.0) < 0.01
    assert np.isclose(_share_between(bars, "finding", 0.01, 1.0), 13 / 19)


def test_the_returned_bars_are_the_drawn_ones(tmp_path: Path, drawn: list[Drawn]) -> None:
    scores, labels = _window()
    got = plot_scores(scores, labels, tmp_path / "scores.png")
    (bars,) = drawn
    assert got.counts == {"no finding": N_CLEAN, "finding": 19}
    for name in ("no finding", "finding"):
        np.testing.assert_array_equal(got.shares[name], bars.height[name])
        np.testing.assert_allclose(got.edges[:-1], bars.left[name])


def test_the_plot_is_written_and_a_window_without_findings_is_drawn(
    tmp_path: Path, drawn: list[Drawn]
) -> None:
    scores, labels = _window()
    path = tmp_path / "scores.png"
    plot_scores(scores, labels, path)
    with Image.open(path) as image:
        assert image.size[0] > 300 and image.size[1] > 200
    clean = labels == 0
    plot_scores(scores[clean], labels[clean], tmp_path / "none.png")
    assert list(drawn[1].height) == ["no finding"]  # no empty class drawn as NaN bars
    assert np.isclose(drawn[1].height["no finding"].sum(), 1.0)
