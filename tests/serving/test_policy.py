"""Queue policy: priority, lanes, queue with exploration, referral state machine."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections import Counter

import pytest

from serving.policy import (
    Candidate,
    InspectionOutcome,
    LaneThresholds,
    Officer,
    QueueEntry,
    Status,
    TransitionError,
    age,
    build_queue,
    claim,
    close,
    correct_outcome,
    exploration_slots,
    lane,
    open_referral,
    overdue,
    priority,
    record_outcome,
    release,
    waive,
)

DAY = dt.date(2025, 6, 1)
T0 = dt.datetime(2025, 6, 1, 8, 0, tzinfo=dt.UTC)
OFFICE = "KZALA-01"
ALICE = Officer("alice", OFFICE)
BOB = Officer("bob", OFFICE)
OTHER = Officer("olga", "UZTAS-02")


# --------------------------------------------------------------------------- priority


class TestPriority:
    def test_worked_examples(self) -> None:
        assert priority(0.0) == 0.0
        assert priority(0.2, ["high"]) == pytest.approx(1 - 0.8 * 0.5)  # 0.6
        # 1 - 0.9 * 0.75 * 0.9 * (1 - 0.6 * 0.9) = 1 - 0.27945
        assert priority(0.1, ["medium", "low"], watchlist_score=0.9) == pytest.approx(0.72055)
        assert priority(0.5, ["info"]) == pytest.approx(0.5)

    def test_near_misses_do_not_move_the_priority(self) -> None:
        """A fuzzy score below the alert threshold (0.85) counts as no match; from
        the threshold it counts whole (0.85 -> 1 - 0.51 of what is left)."""
        for w in (0.70, 0.80, 0.849):
            assert priority(0.05, ["low"], watchlist_score=w) == priority(0.05, ["low"])
            assert lane(priority(0.05, watchlist_score=w), False) == "green"
        assert priority(0.0, watchlist_score=0.85) == pytest.approx(0.51)
        assert lane(priority(0.0, watchlist_score=0.85), False) == "red"

    def test_forced_goes_to_top_band(self) -> None:
        assert priority(0.3, ["must_inspect"]) == pytest.approx(2 + (1 - 0.7 * 0.5))  # 2.65
        assert priority(0.0, watchlist_exact=True) == pytest.approx(2.6)
        # the weakest forced shipment outranks the strongest unforced one
        assert priority(0.0, watchlist_exact=True) > priority(1.0, ["high"] * 5, watchlist_score=1)

    def test_monotone_in_every_input(self) -> None:
        probs = [0.0, 0.01, 0.2, 0.5, 0.99, 1.0]
        sevs = ["info", "low", "medium", "high", "must_inspect"]
        scores = [0.0, 0.3, 0.9, 1.0]
        for p1, p2 in itertools.pairwise(probs):
            assert priority(p1, ["low"]) <= priority(p2, ["low"])
        for s1, s2 in itertools.pairwise(sevs):
            assert priority(0.1, [s1]) <= priority(0.1, [s2])
        for w1, w2 in itertools.pairwise(scores):
            assert priority(0.1, watchlist_score=w1) <= priority(0.1, watchlist_score=w2)
        for p, s, w in itertools.product(probs, sevs, scores):
            base = priority(p, [s], watchlist_score=w)
            assert priority(p, [s, "low"], watchlist_score=w) >= base  # one more hit
            assert priority(p, [s], watchlist_score=w, watchlist_exact=True) >= base

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [
            ((1.2,), {}),
            ((-0.1,), {}),
            ((0.5, ["critical"]), {}),
            ((0.5,), {"watchlist_score": 2.0}),
        ],
    )
    def test_bad_inputs(self, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            priority(*args, **kwargs)  # type: ignore[arg-type]


class TestLane:
    def test_default_thresholds(self) -> None:
        assert lane(0.6) == "red"
        assert lane(0.5) == "red"
        assert lane(0.25) == "yellow"
        assert lane(0.2) == "yellow"
        assert lane(0.19) == "green"
        assert lane(0.01, must_inspect=True) == "red"
        assert lane(2.0) == "red"

    def test_custom_thresholds(self) -> None:
        t = LaneThresholds(red=0.8, yellow=0.4)
        assert [lane(v, thresholds=t) for v in (0.9, 0.6, 0.3)] == ["red", "yellow", "green"]
        with pytest.raises(ValueError):
            LaneThresholds(red=0.2, yellow=0.5)


# --------------------------------------------------------------------------- queue


def cand(sid: str, prio: float, *, must: bool = False, exact: bool = False) -> Candidate:
    return Candidate(sid, OFFICE, DAY, prio, must_inspect=must, watchlist_exact=exact)


def others(n: int, start: float = 0.9, step: float = 0.01) -> list[Candidate]:
    return [cand(f"c{i:03d}", round(start - i * step, 4)) for i in range(n)]


class TestQueue:
    def test_exploration_slots(self) -> None:
        assert [exploration_slots(c, 0.05) for c in (9, 10, 20, 29, 30, 100)] == [0, 1, 1, 1, 2, 5]
        assert exploration_slots(20, 0.0) == 0

    def test_composition_worked_example(self) -> None:
        # capacity 20, 5% -> 1 random slot; 2 forced; 18 left -> 17 top + 1 random among 13
        forced = [cand("rule1", 2.3, must=True), cand("watch1", 2.6, exact=True)]
        queue = build_queue(forced + others(30), capacity=20, rng_seed=7)
        assert len(queue) == 20
        assert [e.rank for e in queue] == list(range(1, 21))
        assert [(e.shipment_id, e.selection_method) for e in queue[:2]] == [
            ("watch1", "watchlist"),
            ("rule1", "rule"),
        ]
        model = [e for e in queue if e.selection_method == "model"]
        assert [e.shipment_id for e in model] == [f"c{i:03d}" for i in range(17)]
        [rand] = [e for e in queue if e.selection_method == "random"]
        assert rand.shipment_id in {f"c{i:03d}" for i in range(17, 30)}
        assert rand.selection_probability == pytest.approx(1 / 13)
        assert all(e.selection_probability == 1.0 for e in queue if e is not rand)
        assert not any(e.over_capacity for e in queue)
        assert queue[0].lane == "red" and model[0].lane == "red"  # 0.9 >= 0.5

    def test_forced_beyond_capacity_all_in_and_flagged(self) -> None:
        forced = [cand(f"f{i}", 2.0 + i / 10, must=True) for i in range(5)]
        queue = build_queue(forced + others(10), capacity=3, exploration_share=0.5)
        assert [e.shipment_id for e in queue] == ["f4", "f3", "f2", "f1", "f0"]
        assert [e.over_capacity for e in queue] == [False, False, False, True, True]
        assert {e.selection_method for e in queue} == {"rule"}

    def test_small_pool_selected_with_probability_one(self) -> None:
        # capacity 10, share 0.5 -> 5 random slots; 7 candidates: 5 top, pool of 2, both taken
        queue = build_queue(others(7), capacity=10, exploration_share=0.5)
        assert len(queue) == 7
        rand = [e for e in queue if e.selection_method == "random"]
        assert len(rand) == 2 and all(e.selection_probability == 1.0 for e in rand)

    def test_no_exploration_is_pure_ranking(self) -> None:
        queue = build_queue(others(10), capacity=4, exploration_share=0.0)
        assert [e.shipment_id for e in queue] == ["c000", "c001", "c002", "c003"]

    def test_ties_broken_by_shipment_id(self) -> None:
        cands = [cand("b", 0.5), cand("a", 0.5), cand("c", 0.5)]
        assert [e.shipment_id for e in build_queue(cands, 2, 0.0)] == ["a", "b"]

    def test_seed_reproducible(self) -> None:
        cands = others(40)
        assert build_queue(cands, 20, 0.2, rng_seed=5) == build_queue(cands, 20, 0.2, rng_seed=5)

    def test_refuses_mixed_offices_and_duplicates(self) -> None:
        mixed = [cand("a", 0.1), Candidate("b", "UZTAS-02", DAY, 0.2)]
        with pytest.raises(ValueError, match="one office"):
            build_queue(mixed, 5)
        with pytest.raises(ValueError, match="twice"):
            build_queue([cand("a", 0.1), cand("a", 0.2)], 5)

    def test_random_frequency_matches_recorded_probability(self) -> None:
        # capacity 5, share 0.4 -> 2 random slots; 12 candidates: 3 top, 2 drawn among 9
        cands = others(12)
        runs = 3000
        counts: Counter[str] = Counter()
        recorded: set[float] = set()
        for seed in range(runs):
            for e in build_queue(cands, capacity=5, exploration_share=0.4, rng_seed=seed):
                counts[e.shipment_id] += 1
                if e.selection_method == "random":
                    recorded.add(e.selection_probability)
        assert recorded == {2 / 9}
        for sid in ("c000", "c001", "c002"):
            assert counts[sid] == runs  # deterministic picks: probability 1
        for i in range(3, 12):
            freq = counts[f"c{i:03d}"] / runs
            # standard error sqrt(2/9 * 7/9 / 3000) = 0.0076; allow 4 of them
            assert abs(freq - 2 / 9) < 0.031, (i, freq)


# --------------------------------------------------------------------------- referrals


def entry(sid: str = "s1") -> QueueEntry:
    return QueueEntry(sid, OFFICE, DAY, 1, 0.7, "red", "model", 1.0)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


FOUND = InspectionOutcome(True, "parts", 12, "PCE", "12 barrels in a machine crate")


class TestReferral:
    def test_inspection_path(self) -> None:
        ref = open_referral(entry(), T0)
        assert ref.status is Status.OPEN
        ref = claim(ref, ALICE, at(5))
        assert (ref.status, ref.claimed_by, ref.claimed_at) == (Status.CLAIMED, "alice", at(5))
        ref = record_outcome(ref, ALICE, at(50), FOUND)
        assert ref.status is Status.INSPECTED and ref.outcome == FOUND
        assert (ref.decided_by, ref.decided_at) == ("alice", at(50))
        ref = close(ref, BOB, at(60))
        assert (ref.status, ref.closed_by) == (Status.CLOSED, "bob")
        assert [(t.from_status, t.to_status, t.by) for t in ref.history] == [
            (None, Status.OPEN, "queue"),
            (Status.OPEN, Status.CLAIMED, "alice"),
            (Status.CLAIMED, Status.INSPECTED, "alice"),
            (Status.INSPECTED, Status.CLOSED, "bob"),
        ]
        assert age(ref, at(1000)) == dt.timedelta(minutes=50)  # age stops at the decision

    def test_waiver_path_keeps_reason(self) -> None:
        ref = claim(open_referral(entry(), T0), ALICE, at(1))
        ref = waive(ref, ALICE, at(2), "  Seals intact, joint inspection done at origin  ")
        assert ref.status is Status.WAIVED
        assert ref.waiver_reason == "Seals intact, joint inspection done at origin"
        assert ref.history[-1].note == ref.waiver_reason
        assert close(ref, ALICE, at(3)).status is Status.CLOSED

    def test_transitions_do_not_mutate(self) -> None:
        ref = open_referral(entry(), T0)
        claim(ref, ALICE, at(1))
        assert ref.status is Status.OPEN and len(ref.history) == 1

    @pytest.mark.parametrize("reason", ["", "   ", "\n"])
    def test_waive_without_reason_refused(self, reason: str) -> None:
        ref = claim(open_referral(entry(), T0), ALICE, at(1))
        with pytest.raises(TransitionError, match="needs a reason"):
            waive(ref, ALICE, at(2), reason)

    def test_outcome_when_not_claimed_refused(self) -> None:
        ref = open_referral(entry(), T0)
        with pytest.raises(TransitionError, match="it is open, it must be claimed"):
            record_outcome(ref, ALICE, at(1), FOUND)
        with pytest.raises(TransitionError, match="it must be claimed"):
            waive(ref, ALICE, at(1), "reason")

    def test_claim_by_other_office_refused(self) -> None:
        with pytest.raises(TransitionError, match="of office UZTAS-02 cannot claim"):
            claim(open_referral(entry(), T0), OTHER, at(1))

    def test_only_the_claimer_decides(self) -> None:
        ref = claim(open_referral(entry(), T0), ALICE, at(1))
        with pytest.raises(TransitionError, match="claimed by alice"):
            record_outcome(ref, BOB, at(2), FOUND)
        with pytest.raises(TransitionError, match="claimed by alice"):
            waive(ref, BOB, at(2), "busy")

    def test_double_claim_and_release(self) -> None:
        ref = claim(open_referral(entry(), T0), ALICE, at(1))
        # (who holds it: found in review, the message did not say)
        with pytest.raises(TransitionError, match=r"cannot claim .*: it is claimed by alice,"):
            claim(ref, BOB, at(2))
        waived = waive(ref, ALICE, at(2), "seals intact")
        with pytest.raises(TransitionError, match=r"it is waived, .*changed by correcting it"):
            record_outcome(waived, ALICE, at(3), FOUND)
        ref = release(ref, ALICE, at(3))
        assert ref.status is Status.OPEN and ref.claimed_by is None
        assert claim(ref, BOB, at(4)).claimed_by == "bob"

    def test_close_only_after_decision_and_never_twice(self) -> None:
        ref = claim(open_referral(entry(), T0), ALICE, at(1))
        with pytest.raises(TransitionError, match="cannot close"):
            close(ref, ALICE, at(2))
        closed = close(waive(ref, ALICE, at(2), "duplicate declaration"), ALICE, at(3))
        with pytest.raises(TransitionError, match="it is closed"):
            close(closed, ALICE, at(4))
        with pytest.raises(TransitionError, match="cannot close"):
            close(waive(ref, ALICE, at(2), "x"), OTHER, at(3))

    def test_time_cannot_go_backwards_and_must_be_aware(self) -> None:
        ref = claim(open_referral(entry(), T0), ALICE, at(10))
        with pytest.raises(TransitionError, match="earlier than its last change"):
            record_outcome(ref, ALICE, at(5), FOUND)
        with pytest.raises(TransitionError, match="timezone-aware"):
            record_outcome(ref, ALICE, dt.datetime(2025, 6, 1, 9), FOUND)

    @pytest.mark.parametrize(
        ("outcome", "message"),
        [
            (InspectionOutcome(True), "needs a finding category"),
            (InspectionOutcome(False, "parts"), "finding is false"),
            (InspectionOutcome(True, "rockets"), "unknown finding category"),
            (InspectionOutcome(True, "firearms", -1, "PCE"), "non-negative"),
            (InspectionOutcome(True, "firearms", 3), "needs a unit"),
            (InspectionOutcome(False, None, 3, "PCE"), "needs a finding"),
        ],
    )
    def test_bad_outcomes_refused(self, outcome: InspectionOutcome, message: str) -> None:
        ref = claim(open_referral(entry(), T0), ALICE, at(1))
        with pytest.raises(TransitionError, match=message):
            record_outcome(ref, ALICE, at(2), outcome)

    def test_no_inspection_before_the_declaration(self) -> None:
        """An outcome (or a waiver corrected into one) made before the shipment's
        declaration time is refused, naming both times: the outcomes contract would
        reject the label, so it would never reach training."""
        declared = dataclasses.replace(open_referral(entry(), T0), declared_at=at(30))
        ref = claim(declared, ALICE, at(1))
        with pytest.raises(TransitionError, match=r"declared at .*later than the inspection"):
            record_outcome(ref, ALICE, at(29), FOUND)
        assert record_outcome(ref, ALICE, at(30), FOUND).status is Status.INSPECTED
        waived = waive(ref, ALICE, at(2), "seals intact")
        with pytest.raises(TransitionError, match="cannot correct the waiver of"):
            correct_outcome(waived, ALICE, at(20), FOUND, "inspected after all")
        assert correct_outcome(waived, ALICE, at(31), FOUND, "inspected after all").outcome

    def test_no_finding_outcome(self) -> None:
        ref = claim(open_referral(entry(), T0), ALICE, at(1))
        ref = record_outcome(ref, ALICE, at(2), InspectionOutcome(False, notes="nothing"))
        assert ref.outcome is not None and not ref.outcome.finding


def test_overdue_lists_unclosed_older_than_max_age_oldest_first() -> None:
    now = T0 + dt.timedelta(hours=30)
    old_open = open_referral(entry("old"), T0)  # 30 h
    older_claimed = claim(open_referral(entry("older"), T0 - dt.timedelta(hours=2)), ALICE, T0)
    fresh = open_referral(entry("fresh"), T0 + dt.timedelta(hours=10))  # 20 h
    closed = close(
        waive(
            claim(open_referral(entry("closed"), T0 - dt.timedelta(days=3)), ALICE, T0),
            ALICE,
            T0,
            "reason",
        ),
        ALICE,
        T0,
    )
    exactly = open_referral(entry("exactly"), T0 + dt.timedelta(hours=6))  # 24 h, not over
    late = overdue([fresh, old_open, closed, older_claimed, exactly], now, dt.timedelta(hours=24))
    assert [r.shipment_id for r in late] == ["older", "old"]
    assert age(old_open, now) == dt.timedelta(hours=30)


def test_vectorised_priorities_equal_the_scalar_formula() -> None:
    import numpy as np

    from serving.policy import SEVERITY_WEIGHTS, priorities, priority

    rng = np.random.default_rng(4)
    cases = []
    for _ in range(300):
        sev = list(rng.choice(list(SEVERITY_WEIGHTS), size=int(rng.integers(0, 3))))
        cases.append((float(rng.random()), sev, float(rng.random()), bool(rng.random() < 0.1)))
    expected = [priority(p, s, watchlist_score=w, watchlist_exact=e) for p, s, w, e in cases]
    keep = np.array([np.prod([1 - SEVERITY_WEIGHTS[x] for x in s]) for _, s, _, _ in cases])
    forced = np.array(["must_inspect" in s for _, s, _, _ in cases])
    got = priorities(
        np.array([c[0] for c in cases]),
        keep,
        forced,
        np.array([c[2] for c in cases]),
        np.array([c[3] for c in cases]),
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)
