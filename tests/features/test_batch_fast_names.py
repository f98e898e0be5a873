"""`features.names.shared_normalisation` (a batch normalises the parties' names and
addresses once for every family): within it, `normalise_names` gives exactly what
it gives outside it, for a Series normalised before, an equal one, one differing
in a single value or a null, in another order or of another dtype; and a batch
built with it equals one built without it, value for value."""

from __future__ import annotations

import random

import polars as pl
import pytest
from polars.testing import assert_frame_equal, assert_series_equal

from data_contracts.settings import DataLayout
from features import names
from features.build import build_features
from features.names import normalise_names, shared_normalisation
from features.state import FeatureState
from pipelines.features import load_history

WORDS = [
    "Абдуллаев", "Abdullayev", "ABDULLAEV", "ТОО", "LLC", "Ш.А.", "Ismoilov", "Исмаилов",
    "ООО «Восток-Трейд»", "Xodjaev", "张伟", "Müller", "O'tkir", "ул. Ленина д. 12 кв. 5",
    "д 12/3 кв ٣", "", " ", "Co. Ltd", "Қазақ", "Nodira", "ЁЖ", "Е\u0308ж", "12a",
]  # fmt: skip


def _names(seed: int, n: int, nulls: float = 0.1) -> list[str | None]:
    rng = random.Random(seed)
    out: list[str | None] = []
    for _ in range(n):
        if rng.random() < nulls:
            out.append(None)
        else:
            out.append(" ".join(rng.choices(WORDS, k=rng.randint(1, 4))))
    return out


def _plain(series: pl.Series, sort_tokens: bool) -> pl.Series:
    """`normalise_names` outside any shared normalisation (the path before)."""
    assert getattr(names._SHARED, "memo", None) is None
    return normalise_names(series, sort_tokens=sort_tokens)


def _same(got: pl.Series, want: pl.Series) -> None:
    assert_series_equal(got, want, check_exact=True)


@pytest.mark.parametrize("sort_tokens", [False, True])
def test_shared_keys_equal_the_plain_keys(sort_tokens: bool) -> None:
    n = 3 * names.SHARED_MIN_ROWS
    base = pl.Series("a", _names(1, n), dtype=pl.String)
    changed = base.scatter(n // 2, "Ivanov Ivan")
    nulled = base.scatter(7, None)
    shuffled = base.sample(fraction=1.0, shuffle=True, seed=3)
    categorical = base.rename("c").cast(pl.Categorical)
    other_length = base.head(n - 1)
    small = base.head(10)
    cases = [base, base.rename("b"), changed, nulled, shuffled, categorical, other_length, small]
    want = [_plain(s, sort_tokens) for s in cases]
    flipped = _plain(base, not sort_tokens)
    with shared_normalisation():
        for _ in range(2):  # (the second time every large one is a hit)
            for series, expected in zip(cases, want, strict=True):
                _same(normalise_names(series, sort_tokens=sort_tokens), expected)
            _same(normalise_names(base, sort_tokens=not sort_tokens), flipped)
    assert getattr(names._SHARED, "memo", None) is None  # (dropped on leaving)


def test_nested_uses_share_one_memo_and_past_the_limit_old_ones_go() -> None:
    n = names.SHARED_MIN_ROWS
    series = [pl.Series("s", _names(seed, n), dtype=pl.String) for seed in range(12)]
    want = [_plain(s, True) for s in series]
    with shared_normalisation():
        memo = names._SHARED.memo
        with shared_normalisation():
            assert names._SHARED.memo is memo
            for s, w in zip(series, want, strict=True):
                _same(normalise_names(s, sort_tokens=True), w)
        assert names._SHARED.memo is memo and len(memo) == names.SHARED_MAX
        for s, w in zip(reversed(series), reversed(want), strict=True):
            _same(normalise_names(s, sort_tokens=True), w)
    assert getattr(names._SHARED, "memo", None) is None


def test_a_batch_equals_one_without_the_shared_keys(
    small_world: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = load_history(small_world)
    # (rows shuffled: the memo must not rely on any order)
    ships = history.shipments.sample(fraction=1.0, shuffle=True, seed=5)
    history = type(history)(
        ships, history.items, history.outcomes, history.travellers, history.watchlist
    )
    shared = build_features(ships, history.items, history)
    state = FeatureState.build(history)
    monkeypatch.setattr(names, "SHARED_MIN_ROWS", 10**12)  # (no Series is shared)
    plain = build_features(ships, history.items, history)
    assert_frame_equal(shared, plain, check_exact=True)
    plain_state = FeatureState.build(history)
    for got, want in zip(state.tables(), plain_state.tables(), strict=True):
        assert_frame_equal(got.frame, want.frame, check_exact=True)
    assert_frame_equal(state.keyed, plain_state.keyed, check_exact=True)
    assert_frame_equal(
        state.travellers.records.keys, plain_state.travellers.records.keys, check_exact=True
    )
    assert state.network.mentions is not None and plain_state.network.mentions is not None
    assert_frame_equal(state.network.mentions, plain_state.network.mentions, check_exact=True)
