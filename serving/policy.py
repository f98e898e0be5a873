"""Queue policy: priority, lanes, the daily queue of an office, and referrals.

Plain functions over plain data (no database, no clock: time is always passed in).

Priority
    Two bands, so that a forced entry always outranks any other::

        risk     = 1 - (1 - p) * prod(1 - w[s] for each rule hit s) * (1 - 0.6 * watch)
        priority = risk            when nothing forces the shipment in   (0 <= priority <= 1)
        priority = 2 + risk        when a must-inspect rule or an exact watchlist
                                   hit forces it in                      (2 <= priority <= 3)

    p is the model probability, watch the fuzzy score in [0, 1] of the watchlist
    hit that acts when it reaches the screening's alert threshold (0.85, as
    `features.screening.DEFAULT_THRESHOLD`) and the match is not weak, else 0 (1
    for an exact hit; `watchlist_weight`), and
    the severity weights w are info 0, low 0.10, medium 0.25, high 0.50
    (must_inspect counts as forcing, and 0.50 inside `risk` so forced entries are
    still ordered among themselves). This "noisy-OR" treats each signal as an
    independent chance of a finding; it is an ordering, not a calibrated
    probability. It is non-decreasing in p, in the watchlist score, in each
    severity and in the number of hits.

    Near misses (fuzzy scores from 0.70, the lowest the screening keeps, up to
    the alert threshold) are shown with the shipment and feed the model's
    watchlist features, but do not move the priority: with the UN list loaded,
    generic company words ("... Trading Company") alone give such scores to a
    large share of ordinary traders, and a yellow lane for each would bury the
    real alerts.

    Weak matches count as near misses too, whatever their score: a match that
    rests on one word once company forms are dropped ("IP Bilal", `ООО "Адель"`
    against the one-word alias "Bilal" or "Adel" of a listed individual: 100,
    but a common given name), or on one word and initials ("Ким А.А."), or a
    company's name against a listed individual's
    (see `features.screening.weak_match`). Shown and explained as weak, never
    enough alone for a yellow or red lane. The hit that acts is the best one
    that counts (`features.watchlist.operational`), so a weak 100 never hides
    another party's real alert; multi-word matches and exact hits are unchanged.

Lanes (defaults, configurable per office through `LaneThresholds`)
    red (physical inspection): forced, or priority >= 0.50 (a high rule alone);
    yellow (documentary check): priority >= 0.20 (a medium rule alone);
    green (release) otherwise.

Queue (one office, one day)
    1. forced candidates (must-inspect rule or exact watchlist hit), always in,
       best first; those beyond capacity are flagged `over_capacity`;
    2. exploration slots m = round_half_up(exploration_share * capacity), capped by
       the slots left after step 1;
    3. the top (slots left - m) others by priority, deterministically (ties by
       shipment id);
    4. min(m, N) shipments drawn uniformly at random, without replacement, from
       the N candidates left: each selected with probability min(m, N) / N, which
       is recorded.
    Every entry records its selection method and the exact probability with which
    this policy selected it (1.0 for steps 1 and 3).

A queue placed in steps (`build_queue(..., exploration=r)`)
    A day's queue is placed on its first view and extended at later views with the
    shipments that arrived since. The day reserves M = round_half_up(share *
    capacity) exploration slots from its first placement on; each placement is
    `build_queue` over that placement's candidates with capacity = the slots left
    and m = r, the reserved slots not yet drawn (M minus the day's draws so far),
    so the ranked step 3 never takes a reserved slot, and the reserved slots are
    drawn into when a placement has candidates left over (its pool of N). A draw
    at a placement picks d = min(r, N) of its N uniformly, so each member of that
    pool is selected with probability exactly d / N, given the candidates known at
    that placement (the arrivals and the views decide which placement a shipment
    meets; the policy's own randomness is only the draw). That conditional
    probability is the recorded one, and it is the one inverse-propensity weights
    need: each drawn entry stands for 1 / (d / N) shipments of its pool. Shipments
    that arrive after the M slots are drawn have no chance of a draw (they are in
    no pool), so the random share is an unbiased sample of the pools that had
    draws, not of the whole day; a pool smaller than r is taken whole (d / N = 1).
    Draws are seeded by office, day and the number of entries already placed, so
    the same arrivals and views give the same queue.

Selection method (what put the entry in the queue)
    step 1: "rule" (must-inspect) or "watchlist" (exact hit); step 4: "random".
    Step 3 entries are "model" when the model probability alone would have ranked
    them among the (slots left - m) best of the non-forced candidates (same tie
    order); otherwise something else lifted them in: "rule" when they hit a rule,
    "watchlist" when only a fuzzy watchlist match did. The selection probability
    stays 1.0 for all three (the choice was deterministic), so inverse-propensity
    weights are unaffected; the method says which signal to credit.

Late arrivals (`displacements`)
    A queue is extended with the shipments scored after it was built, within the
    capacity left. A red or yellow arrival that does not fit takes the place of the
    lowest-priority entry that is open (so unclaimed), was placed by ranking
    (step 3: not forced, not an exploration draw), is within capacity and has a
    lower priority; best arrival first, one entry each. Priorities are the current
    ones: an entry whose shipment was scored again since its placement (a watchlist
    rescreen) is judged by its latest score, so an entry that has become forced
    (priority >= 2) is never displaced. The
    result is the queue that building it with every shipment known would have
    ranked, without touching entries an officer has taken or exploration draws
    (whose recorded probabilities must stay true). Green arrivals never displace.

Referrals
    open -> claimed -> inspected | waived -> closed, and claimed -> open (release).
    A recorded decision is corrected with a reason (`correct_outcome`): waived ->
    inspected (the goods were inspected after all), inspected -> inspected and
    closed -> closed (the outcome's values change, not its place).
    A referral is overdue only while it awaits a decision (open or claimed), and
    its age stops at the decision. Each transition is a pure
    function returning a new Referral (with who and when) or raising
    TransitionError.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

import numpy as np

from data_contracts.fields import EARLIEST_DATETIME, FUTURE_LIMIT
from data_contracts.schemas import FINDING_CATEGORIES, QUANTITY_UNITS
from features.screening import DEFAULT_THRESHOLD

SEVERITY_WEIGHTS: dict[str, float] = {
    "info": 0.0,
    "low": 0.10,
    "medium": 0.25,
    "high": 0.50,
    "must_inspect": 0.50,
}
WATCHLIST_WEIGHT = 0.6
# A fuzzy watchlist score below this is a near miss: no effect on the priority.
WATCHLIST_ALERT = DEFAULT_THRESHOLD / 100.0
TOP_BAND = 2.0

Lane = Literal["red", "yellow", "green"]
SelectionMethod = Literal["rule", "model", "watchlist", "random"]


def _unit(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def watchlist_weight(score: float, exact: bool, weak: bool = False) -> float:
    """`watch` of the priority: 1 for an exact hit, the score (0-1) when it reaches
    the alert threshold and the match is not weak, else 0 (a near miss)."""
    if exact:
        return 1.0
    return score if score >= WATCHLIST_ALERT and not weak else 0.0


def weak_watchlist_match(match: Mapping[str, object] | None) -> bool:
    """Whether a stored watchlist match (`serving.scoring.watchlist_match`, as a
    score's explanation keeps it) is weak: counted as a near miss."""
    return bool(match and match.get("weak"))


def priority(
    probability: float,
    rule_hits: Iterable[str] = (),
    *,
    watchlist_score: float = 0.0,
    watchlist_exact: bool = False,
    watchlist_weak: bool = False,
) -> float:
    """Priority of one shipment from its model probability, the severities of the rules
    it hit and its watchlist hit (see the module docstring for the formula;
    `watchlist_weak`: the hit is weak, a near miss whatever its score)."""
    _unit("probability", probability)
    _unit("watchlist_score", watchlist_score)
    keep = 1.0 - probability
    forced = watchlist_exact
    for severity in rule_hits:
        if severity not in SEVERITY_WEIGHTS:
            raise ValueError(f"unknown severity {severity!r}")
        keep *= 1.0 - SEVERITY_WEIGHTS[severity]
        forced = forced or severity == "must_inspect"
    keep *= 1.0 - WATCHLIST_WEIGHT * watchlist_weight(
        watchlist_score, watchlist_exact, watchlist_weak
    )
    risk = 1.0 - keep
    return TOP_BAND + risk if forced else risk


def priorities(
    probability: np.ndarray,
    rule_keep: np.ndarray | None = None,
    forced: np.ndarray | None = None,
    watchlist_score: np.ndarray | None = None,
    watchlist_exact: np.ndarray | None = None,
    watchlist_weak: np.ndarray | None = None,
) -> np.ndarray:
    """`priority` for many shipments at once. `rule_keep` is the product of
    (1 - severity weight) over each shipment's rule hits (1 when none), `forced`
    whether a must-inspect rule hit, `watchlist_weak` whether the watchlist hit is
    weak."""
    n = len(probability)
    keep = (1.0 - probability) * (np.ones(n) if rule_keep is None else rule_keep)
    exact = np.zeros(n, dtype=bool) if watchlist_exact is None else watchlist_exact
    score = np.zeros(n) if watchlist_score is None else watchlist_score
    weak = np.zeros(n, dtype=bool) if watchlist_weak is None else watchlist_weak
    watch = np.where(exact, 1.0, np.where((score >= WATCHLIST_ALERT) & ~weak, score, 0.0))
    keep = keep * (1.0 - WATCHLIST_WEIGHT * watch)
    risk = 1.0 - keep
    top = exact | (np.zeros(n, dtype=bool) if forced is None else forced)
    return np.where(top, TOP_BAND + risk, risk)


def is_forced(rule_hits: Iterable[str], watchlist_exact: bool) -> bool:
    return watchlist_exact or any(s == "must_inspect" for s in rule_hits)


@dataclass(frozen=True)
class LaneThresholds:
    red: float = 0.50
    yellow: float = 0.20

    def __post_init__(self) -> None:
        if not 0.0 <= self.yellow <= self.red <= 1.0:
            raise ValueError("lane thresholds need 0 <= yellow <= red <= 1")


def lane(
    value: float, must_inspect: bool = False, thresholds: LaneThresholds | None = None
) -> Lane:
    """red / yellow / green for a priority; forced shipments are always red."""
    t = thresholds or LaneThresholds()
    if must_inspect or value >= TOP_BAND or value >= t.red:
        return "red"
    if value >= t.yellow:
        return "yellow"
    return "green"


# --------------------------------------------------------------------------- queue


@dataclass(frozen=True)
class Candidate:
    """A scored shipment waiting for today's queue of its office."""

    shipment_id: str
    office_code: str
    day: dt.date
    priority: float
    must_inspect: bool = False
    watchlist_exact: bool = False
    rule_keys: tuple[str, ...] = ()  # "<rule id>@v<version>" of the rules that hit
    # The model probability alone (None: unknown, the priority stands in for it) and
    # whether any rule hit: what tells "model" from "rule" for a ranked entry.
    probability: float | None = None
    rule_hit: bool = False

    @property
    def forced(self) -> bool:
        return self.must_inspect or self.watchlist_exact

    @property
    def model_probability(self) -> float:
        return self.priority if self.probability is None else self.probability

    @property
    def hit_a_rule(self) -> bool:
        return self.rule_hit or bool(self.rule_keys)


@dataclass(frozen=True)
class QueueEntry:
    shipment_id: str
    office_code: str
    day: dt.date
    rank: int  # 1 = first
    priority: float
    lane: Lane
    selection_method: SelectionMethod
    selection_probability: float
    over_capacity: bool = False
    rule_keys: tuple[str, ...] = ()


def exploration_slots(capacity: int, exploration_share: float) -> int:
    """Slots reserved for random picks: the share of capacity, rounded half up."""
    return math.floor(exploration_share * capacity + 0.5)


def _order(c: Candidate) -> tuple[float, str]:
    return (-c.priority, c.shipment_id)


def _model_order(c: Candidate) -> tuple[float, str]:
    return (-c.model_probability, c.shipment_id)


def lifted_method(c: Candidate, model_alone_in: bool) -> SelectionMethod:
    """The method of an entry placed by ranking: "model" when its model probability
    alone would have placed it (`model_alone_in`), else "rule" when it hit a rule,
    else "watchlist" (a fuzzy match lifted it)."""
    if model_alone_in:
        return "model"
    return "rule" if c.hit_a_rule else "watchlist"


def build_queue(
    candidates: Sequence[Candidate],
    capacity: int,
    exploration_share: float = 0.05,
    rng_seed: int = 0,
    thresholds: LaneThresholds | None = None,
    *,
    exploration: int | None = None,
) -> list[QueueEntry]:
    """The queue of one office for one day (see the module docstring for the policy).

    `exploration`: the exploration slots to fill (m before the cap of step 2), for a
    placement that extends a day's queue (the day's reserved slots not yet drawn);
    by default round_half_up(exploration_share * capacity)."""
    if capacity < 0:
        raise ValueError("capacity must be >= 0")
    if exploration is not None and exploration < 0:
        raise ValueError("exploration must be >= 0")
    _unit("exploration_share", exploration_share)
    if len({(c.office_code, c.day) for c in candidates}) > 1:
        raise ValueError("build_queue takes the candidates of one office and one day")
    if len({c.shipment_id for c in candidates}) != len(candidates):
        raise ValueError("a shipment appears twice among the candidates")

    forced = sorted((c for c in candidates if c.forced), key=_order)
    rest = sorted((c for c in candidates if not c.forced), key=_order)
    picked: list[tuple[Candidate, SelectionMethod, float, bool]] = [
        (c, "rule" if c.must_inspect else "watchlist", 1.0, i >= capacity)
        for i, c in enumerate(forced)
    ]
    left = max(capacity - len(forced), 0)
    wanted = exploration_slots(capacity, exploration_share) if exploration is None else exploration
    m = min(wanted, left)
    n_top = min(left - m, len(rest))
    by_model = {c.shipment_id for c in sorted(rest, key=_model_order)[:n_top]}
    picked += [(c, lifted_method(c, c.shipment_id in by_model), 1.0, False) for c in rest[:n_top]]
    pool = rest[n_top:]
    if pool and m:
        draws = min(m, len(pool))
        probability = draws / len(pool)
        chosen = random.Random(rng_seed).sample(pool, draws)
        picked += [(c, "random", probability, False) for c in sorted(chosen, key=_order)]

    return [
        QueueEntry(
            shipment_id=c.shipment_id,
            office_code=c.office_code,
            day=c.day,
            rank=rank,
            priority=c.priority,
            lane=lane(c.priority, c.forced, thresholds),
            selection_method=method,
            selection_probability=p,
            over_capacity=over,
            rule_keys=c.rule_keys,
        )
        for rank, (c, method, p, over) in enumerate(picked, start=1)
    ]


@dataclass(frozen=True)
class Placed:
    """An entry already in the queue, as `displacements` sees it."""

    key: int  # the referral id
    priority: float
    selection_method: str
    status: str
    over_capacity: bool


def displaceable(p: Placed) -> bool:
    return (
        p.status == "open"
        and not p.over_capacity
        and p.selection_method != "random"
        and p.priority < TOP_BAND  # never must-inspect or exact watchlist (forced) entries
    )


def displacements(
    placed: Sequence[Placed], left_out: Sequence[Candidate], lanes: Mapping[str, str]
) -> list[tuple[Candidate, Placed]]:
    """Which red/yellow arrivals that did not fit (`left_out`, lanes by shipment id)
    take the place of which placed entries (see "Late arrivals" above)."""
    victims = sorted((p for p in placed if displaceable(p)), key=lambda p: (p.priority, -p.key))
    arrivals = sorted(
        (c for c in left_out if not c.forced and lanes.get(c.shipment_id) in ("red", "yellow")),
        key=_order,
    )
    pairs: list[tuple[Candidate, Placed]] = []
    for c in arrivals:
        if not victims or victims[0].priority >= c.priority:
            break
        pairs.append((c, victims.pop(0)))
    return pairs


# --------------------------------------------------------------------------- referrals


class Status(StrEnum):
    OPEN = "open"
    CLAIMED = "claimed"
    INSPECTED = "inspected"
    WAIVED = "waived"
    CLOSED = "closed"


class TransitionError(Exception):
    """A referral transition that the rules forbid; the message says why."""


@dataclass(frozen=True)
class Officer:
    officer_id: str
    office_code: str


# --------------------------------------------------------------------------- seizures

SEIZURE_ORDER: tuple[str, ...] = (
    "explosives",
    "firearms",
    "parts",
    "ammunition",
    "dual_use",
    "other_contraband",
    "documentary",
)
"""The finding categories (`FINDING_CATEGORIES`, the same seven) from the most serious
down, which picks an outcome's principal seizure line: its category, quantity and
unit are the outcome's own `category` / `quantity` / `unit` (what the labels, the
rules' finding rates and the label files under raw/outcomes/ read). Explosives
first (mass-casualty goods, the gravest arms finding), then complete firearms,
then their essential parts (a weapon in pieces), then ammunition (rounds without
the weapon are less grave than the weapon), then dual-use goods (lawful goods that
need a licence), other contraband, and last a documentary finding (the papers were
wrong, no goods seized). So "2 rifles with 1 500 rounds" is an outcome of category
firearms, 2 PCE, with the rounds as its second line; the arms labels (firearms,
parts, ammunition, explosives) and "any finding" mean what they did with one line."""

COUNTED_UNITS: frozenset[str] = frozenset({"PCE", "NAR", "PR", "SET", "CT"})
"""Of `QUANTITY_UNITS` (UN/ECE Recommendation 20), the units that count things, so a
quantity in one of them is a whole number: PCE piece, NAR number of articles, PR
pair, SET set, CT carton. KGM kilogram, LTR litre, MTR metre, MTK square metre and
TNE tonne measure, and take fractions."""

MAX_SEIZURE_LINES = 10


@dataclass(frozen=True)
class SeizureLine:
    """One kind of goods seized: its finding category, and how much (quantity and
    unit, both or neither)."""

    category: str | None
    quantity: float | None = None
    unit: str | None = None


@dataclass(frozen=True)
class SeizureProblem:
    """A seizure line the rules refuse: `index` is the line's (None: the lines as a
    whole), `field` the line's field (category, quantity, unit) or "seizures",
    `code` what is wrong (the page's message is `err.<code>`), `message` in English,
    `params` its figures (`index`: the other line's)."""

    index: int | None
    field: str
    code: str
    message: str
    params: Mapping[str, int | str] = dataclasses.field(default_factory=dict)

    def name(self, single: bool = False) -> str:
        """The field it names: `seizures[1].quantity`, or `seizures` for the lines
        as a whole; `single`: the outcome was given as the single category /
        quantity / unit fields (one line), so it names that field."""
        if single:
            return "category" if self.index is None else self.field
        return "seizures" if self.index is None else f"seizures[{self.index}].{self.field}"

    def text(self, single: bool = False) -> str:
        return f"{self.name(single)}: {self.message}"


def seizure_problems(finding: bool, lines: Sequence[SeizureLine]) -> list[SeizureProblem]:
    """Every problem of an outcome's seizure lines (empty: they are right). A finding
    has one or more lines (at most `MAX_SEIZURE_LINES`), each with a known category;
    no finding, no lines. A quantity needs a unit and a unit a quantity; a quantity
    is a finite number above zero (nothing counted: no quantity, not 0), whole in a
    counted unit (`COUNTED_UNITS`); no
    two lines have the same category and unit (one line holds all of it)."""
    out: list[SeizureProblem] = []
    if not finding:
        for i, line in enumerate(lines):
            if line.category is not None:
                out.append(
                    SeizureProblem(
                        i,
                        "category",
                        "category_without_finding",
                        "a finding category was given but finding is false",
                    )
                )
            if line.quantity is not None:
                out.append(
                    SeizureProblem(
                        i,
                        "quantity",
                        "quantity_without_finding",
                        "a quantity seized needs a finding",
                    )
                )
            elif line.unit is not None and line.category is None:
                out.append(
                    SeizureProblem(
                        i, "unit", "unit_without_finding", "a unit was given but finding is false"
                    )
                )
        return out
    if not lines:
        return [
            SeizureProblem(
                None,
                "seizures",
                "category_required",
                "a finding needs a finding category (one seizure line or more)",
            )
        ]
    if len(lines) > MAX_SEIZURE_LINES:
        out.append(
            SeizureProblem(
                None,
                "seizures",
                "seizures_too_many",
                f"at most {MAX_SEIZURE_LINES} seizure lines, got {len(lines)}",
                {"n": MAX_SEIZURE_LINES},
            )
        )
    seen: dict[tuple[str, str | None], int] = {}
    for i, line in enumerate(lines):
        cat, qty, unit = line.category, line.quantity, line.unit
        if cat is None:
            out.append(
                SeizureProblem(
                    i, "category", "category_required", "a seizure line needs a finding category"
                )
            )
        elif cat not in FINDING_CATEGORIES:
            out.append(
                SeizureProblem(
                    i,
                    "category",
                    "category_unknown",
                    f"unknown finding category {cat!r}; expected one of "
                    f"{', '.join(FINDING_CATEGORIES)}",
                )
            )
        elif (cat, unit) in seen:
            j = seen[(cat, unit)]
            out.append(
                SeizureProblem(
                    i,
                    "category",
                    "seizure_duplicate",
                    f"the same category and unit as seizures[{j}]: give its whole quantity "
                    "in one line",
                    {"index": j},
                )
            )
        else:
            seen[(cat, unit)] = i
        if unit is not None and unit not in QUANTITY_UNITS:
            out.append(
                SeizureProblem(
                    i,
                    "unit",
                    "unit_unknown",
                    f"unknown unit {unit!r}; expected one of {', '.join(QUANTITY_UNITS)}",
                )
            )
        if qty is None:
            if unit is not None:
                out.append(
                    SeizureProblem(i, "quantity", "quantity_required", "a unit needs a quantity")
                )
            continue
        if not math.isfinite(qty) or qty < 0:
            out.append(
                SeizureProblem(
                    i,
                    "quantity",
                    "quantity_number",
                    "quantity seized must be a non-negative number",
                )
            )
        elif qty == 0:
            out.append(
                SeizureProblem(
                    i,
                    "quantity",
                    "quantity_zero",
                    "a quantity seized of 0 says nothing was seized: give the quantity "
                    "seized (above zero), or leave the quantity and its unit out",
                )
            )
        elif unit in COUNTED_UNITS and not float(qty).is_integer():
            out.append(
                SeizureProblem(
                    i,
                    "quantity",
                    "quantity_whole",
                    f"{unit} counts things: the quantity must be a whole number, not {qty:g}",
                    {"unit": unit},
                )
            )
        if unit is None:
            out.append(
                SeizureProblem(
                    i,
                    "unit",
                    "unit_required",
                    f"a quantity seized needs a unit, one of {', '.join(QUANTITY_UNITS)}",
                )
            )
    return out


def principal_line(lines: Sequence[SeizureLine]) -> SeizureLine | None:
    """The most serious of the lines (`SEIZURE_ORDER`; of two of one category, the
    first given); None without lines."""
    rank = {c: i for i, c in enumerate(SEIZURE_ORDER)}
    ordered = sorted(
        enumerate(lines), key=lambda il: (rank.get(il[1].category or "", len(rank)), il[0])
    )
    return ordered[0][1] if ordered else None


@dataclass(frozen=True)
class InspectionOutcome:
    finding: bool
    finding_category: str | None = None
    quantity_seized: float | None = None
    seized_unit: str | None = None
    notes: str = ""
    seizures: tuple[SeizureLine, ...] = ()

    def __post_init__(self) -> None:
        """The seizure lines and the principal fields agree: given lines set the
        principal category / quantity / unit (`principal_line`); given only those
        (one line, as before several could be recorded), they are the one line."""
        if self.seizures:
            top = principal_line(self.seizures)
            assert top is not None
            object.__setattr__(self, "finding_category", top.category)
            object.__setattr__(self, "quantity_seized", top.quantity)
            object.__setattr__(self, "seized_unit", top.unit)
        elif (self.finding_category, self.quantity_seized, self.seized_unit) != (None,) * 3:
            line = SeizureLine(self.finding_category, self.quantity_seized, self.seized_unit)
            object.__setattr__(self, "seizures", (line,))

    @classmethod
    def of(cls, given: OutcomeFields) -> InspectionOutcome:
        """From an outcome as the API and the page take it (finding, its seizure
        lines or the single category, quantity and unit, notes)."""
        lines = getattr(given, "seizures", None)
        if lines is not None:
            return cls(
                finding=given.finding,
                notes=given.notes or "",
                seizures=tuple(SeizureLine(s.category, s.quantity, s.unit) for s in lines),
            )
        return cls(
            finding=given.finding,
            finding_category=given.category,
            quantity_seized=given.quantity,
            seized_unit=given.unit,
            notes=given.notes or "",
        )


class OutcomeFields(Protocol):
    @property
    def finding(self) -> bool: ...
    @property
    def category(self) -> str | None: ...
    @property
    def quantity(self) -> float | None: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def notes(self) -> str | None: ...


@dataclass(frozen=True)
class Transition:
    from_status: Status | None
    to_status: Status
    by: str
    at: dt.datetime
    note: str = ""


@dataclass(frozen=True)
class Referral:
    shipment_id: str
    office_code: str
    created_at: dt.datetime
    status: Status = Status.OPEN
    claimed_by: str | None = None
    claimed_at: dt.datetime | None = None
    outcome: InspectionOutcome | None = None
    waiver_reason: str | None = None
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    closed_by: str | None = None
    closed_at: dt.datetime | None = None
    history: tuple[Transition, ...] = field(default=())
    # the shipment's declaration time, when known: no inspection can come before it
    declared_at: dt.datetime | None = None

    @property
    def last_change(self) -> dt.datetime:
        return self.history[-1].at if self.history else self.created_at


def _aware(at: dt.datetime, what: str) -> None:
    if at.tzinfo is None:
        raise TransitionError(f"{what}: time must be timezone-aware (UTC)")


def open_referral(entry: QueueEntry, at: dt.datetime, by: str = "queue") -> Referral:
    """A new open referral for a queue entry."""
    _aware(at, "open")
    return Referral(
        shipment_id=entry.shipment_id,
        office_code=entry.office_code,
        created_at=at,
        history=(Transition(None, Status.OPEN, by, at),),
    )


def _step(
    ref: Referral, to: Status, by: str, at: dt.datetime, note: str = "", **changes: object
) -> Referral:
    _aware(at, to.value)
    if at < ref.last_change:
        raise TransitionError(
            f"referral {ref.shipment_id}: {to.value} at {at.isoformat()} is earlier than its "
            f"last change at {ref.last_change.isoformat()}"
        )
    history = (*ref.history, Transition(ref.status, to, by, at, note))
    return dataclasses.replace(ref, status=to, history=history, **changes)  # type: ignore[arg-type]


def _require(ref: Referral, action: str, *allowed: Status) -> None:
    """Refuse `action` unless the referral's status is one of `allowed`, saying who
    holds a claimed one, and that a decision already recorded is changed by a
    correction."""
    if ref.status not in allowed:
        wanted = " or ".join(s.value for s in allowed)
        state = ref.status.value
        if ref.status is Status.CLAIMED and ref.claimed_by:
            state += f" by {ref.claimed_by}"
        hint = ""
        if ref.status in (Status.INSPECTED, Status.WAIVED) and action in (
            "claim",
            "record an outcome for",
            "waive",
        ):
            hint = "; a decision recorded is changed by correcting it, with a reason"
        raise TransitionError(
            f"cannot {action} the referral of shipment {ref.shipment_id}: it is {state}, "
            f"it must be {wanted}{hint}"
        )


def claim(ref: Referral, officer: Officer, at: dt.datetime) -> Referral:
    """An officer of the referral's office takes it."""
    _require(ref, "claim", Status.OPEN)
    if officer.office_code != ref.office_code:
        raise TransitionError(
            f"officer {officer.officer_id} of office {officer.office_code} cannot claim "
            f"referral {ref.shipment_id} of office {ref.office_code}"
        )
    return _step(
        ref, Status.CLAIMED, officer.officer_id, at, claimed_by=officer.officer_id, claimed_at=at
    )


def release(
    ref: Referral, officer: Officer, at: dt.datetime, *, override: bool = False
) -> Referral:
    """The claiming officer hands the referral back (claimed -> open); with `override`
    (an administrator) anyone's claim is released."""
    _require(ref, "release", Status.CLAIMED)
    if officer.office_code != ref.office_code:
        raise TransitionError(
            f"officer {officer.officer_id} of office {officer.office_code} cannot release "
            f"referral {ref.shipment_id} of office {ref.office_code}"
        )
    if not override:
        _claimer(ref, officer, "release")
    return _step(ref, Status.OPEN, officer.officer_id, at, claimed_by=None, claimed_at=None)


def _claimer(ref: Referral, officer: Officer, action: str) -> None:
    if officer.officer_id != ref.claimed_by:
        raise TransitionError(
            f"officer {officer.officer_id} cannot {action} referral {ref.shipment_id}: "
            f"it is claimed by {ref.claimed_by}"
        )


def _check_outcome(outcome: InspectionOutcome) -> None:
    problems = seizure_problems(outcome.finding, outcome.seizures)
    if problems:
        raise TransitionError(problems[0].text())


class BeforeDeclarationError(TransitionError):
    """An inspection at an instant before the shipment's declaration."""


def _after_declaration(ref: Referral, at: dt.datetime, action: str) -> None:
    """An inspection cannot come before the shipment's declaration (the outcomes
    contract refuses such a label: it would never reach training)."""
    if ref.declared_at is not None and at < ref.declared_at:
        raise BeforeDeclarationError(
            f"cannot {action} referral {ref.shipment_id} at {at.isoformat()}: the shipment "
            f"is declared at {ref.declared_at.isoformat()}, later than the inspection "
            "(check the declaration's time and the server's clock)"
        )


def record_outcome(
    ref: Referral, officer: Officer, at: dt.datetime, outcome: InspectionOutcome
) -> Referral:
    """The claiming officer records what the inspection found (claimed -> inspected)."""
    _require(ref, "record an outcome for", Status.CLAIMED)
    _claimer(ref, officer, "record an outcome for")
    _check_outcome(outcome)
    _after_declaration(ref, at, "record an outcome for")
    return _step(
        ref,
        Status.INSPECTED,
        officer.officer_id,
        at,
        outcome.notes,
        outcome=outcome,
        decided_by=officer.officer_id,
        decided_at=at,
    )


def check_outcome(outcome: InspectionOutcome) -> None:
    """The rules an outcome's values follow (a category with a finding and only then,
    a quantity with a finding and a unit): `TransitionError` naming the problem."""
    _check_outcome(outcome)


def correct_outcome(
    ref: Referral,
    officer: Officer,
    at: dt.datetime,
    outcome: InspectionOutcome,
    reason: str,
    *,
    override: bool = False,
) -> Referral:
    """Correct a recorded decision with what the inspection really found, with a
    reason: the outcome of an inspected referral (or of one since closed), or a
    waiver recorded by mistake when the goods were inspected after all (the waiver
    becomes this outcome). By the officer who decided it, of its office, or an
    administrator (`override`). An inspected or waived referral is inspected
    afterwards; a closed one stays closed. A referral closed without a decision
    (displaced) has nothing to correct."""
    _require(ref, "correct the outcome of", Status.INSPECTED, Status.WAIVED, Status.CLOSED)
    if ref.decided_by is None:
        raise TransitionError(
            f"cannot correct the outcome of referral {ref.shipment_id}: it was closed "
            "without an outcome or a waiver"
        )
    if officer.office_code != ref.office_code:
        raise TransitionError(
            f"officer {officer.officer_id} of office {officer.office_code} cannot correct "
            f"referral {ref.shipment_id} of office {ref.office_code}"
        )
    if not override and officer.officer_id != ref.decided_by:
        raise TransitionError(
            f"officer {officer.officer_id} cannot correct referral {ref.shipment_id}: "
            f"it was decided by {ref.decided_by}"
        )
    if not isinstance(reason, str) or not has_visible_text(reason):
        raise TransitionError(f"correcting referral {ref.shipment_id} needs a reason")
    _check_outcome(outcome)
    if ref.waiver_reason is not None:  # (the waiver becomes an inspection made now)
        _after_declaration(ref, at, "correct the waiver of")
    to = Status.CLOSED if ref.status == Status.CLOSED else Status.INSPECTED
    return _step(
        ref, to, officer.officer_id, at, reason.strip(), outcome=outcome, waiver_reason=None
    )


def has_visible_text(text: str) -> bool:
    """True when `text` has at least one character a reader can see.

    Whitespace (including no-break and ideographic spaces), control characters,
    format characters (Unicode category Cf: zero-width space U+200B, word joiner
    U+2060, bidi marks, soft hyphen ...), unassigned code points, surrogates,
    private-use characters and combining marks standing alone do not count: a
    waiver reason made only of them displays as nothing and is no reason."""
    if not isinstance(text, str):
        return False
    for ch in text:
        if ch.isspace():
            continue
        category = unicodedata.category(ch)
        if category[0] in ("C", "Z", "M"):  # Cc Cf Cn Co Cs, Zs Zl Zp, Mn Mc Me
            continue
        if ch in _INVISIBLE:
            continue
        return True
    return False


# Letters/symbols by category that nevertheless render as blank (fillers).
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def waive(ref: Referral, officer: Officer, at: dt.datetime, reason: str) -> Referral:
    """The claiming officer waives the inspection, with a reason (claimed -> waived)."""
    _require(ref, "waive", Status.CLAIMED)
    _claimer(ref, officer, "waive")
    if not isinstance(reason, str) or not has_visible_text(reason):
        raise TransitionError(f"waiving referral {ref.shipment_id} needs a reason")
    return _step(
        ref,
        Status.WAIVED,
        officer.officer_id,
        at,
        reason.strip(),
        waiver_reason=reason.strip(),
        decided_by=officer.officer_id,
        decided_at=at,
    )


def close(ref: Referral, by: Officer, at: dt.datetime) -> Referral:
    """Close an inspected or waived referral (an officer of its office)."""
    _require(ref, "close", Status.INSPECTED, Status.WAIVED)
    if by.office_code != ref.office_code:
        raise TransitionError(
            f"officer {by.officer_id} of office {by.office_code} cannot close referral "
            f"{ref.shipment_id} of office {ref.office_code}"
        )
    return _step(ref, Status.CLOSED, by.officer_id, at, closed_by=by.officer_id, closed_at=at)


def age(ref: Referral, now: dt.datetime) -> dt.timedelta:
    """Time since the referral was opened, up to its decision (inspection or waiver),
    or its closure when it was closed without one."""
    end = ref.decided_at or ref.closed_at or now
    return end - ref.created_at


AWAITING_DECISION = (Status.OPEN, Status.CLAIMED)


def overdue(
    referrals: Iterable[Referral], now: dt.datetime, max_age: dt.timedelta
) -> list[Referral]:
    """Referrals still awaiting a decision (open or claimed) older than `max_age`,
    oldest first."""
    late = [r for r in referrals if r.status in AWAITING_DECISION and age(r, now) > max_age]
    return sorted(late, key=lambda r: (r.created_at, r.shipment_id))


def queue_day_bounds(today: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last days a queue can be asked for, `today` being the office's."""
    return EARLIEST_DATETIME.date(), today + FUTURE_LIMIT


def queue_day_problem(day: dt.date, today: dt.date) -> str | None:
    """Why `day` cannot hold a queue, or None: queue days lie where declarations can
    (from 1990 to one year ahead, as the ingestion's date bounds: `queue_day_bounds`)."""
    first, last = queue_day_bounds(today)
    if first <= day <= last:
        return None
    return f"no queue on {day.isoformat()}: a queue day lies between {first} and {last}"
