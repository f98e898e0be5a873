"""API inputs and outputs. Inputs are strict (`extra="forbid"`, strict types) and
reuse the contracts' generated pydantic models for shipments, goods lines and
traveller records; outputs are separate models."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    computed_field,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from data_contracts.fields import text_problem
from data_contracts.schemas import CONTRACTS, FINDING_CATEGORIES, QUANTITY_UNITS
from serving.policy import MAX_SEIZURE_LINES, TOP_BAND, SeizureLine, seizure_problems

TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL)
MAX_BATCH = 1000


def _contract_text(value: str | None) -> str | None:
    """Text as the contracts take it (`data_contracts.fields.text_problem`: no
    bidirectional formatting characters, not only invisible ones): an outcome's
    notes go into the label file `caravan validate` reads, which would quarantine
    them (and the label with them)."""
    problem = None if value is None else text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# Free text of a decision (notes, reasons): the contracts' text rule.
DecisionText = Annotated[str | None, AfterValidator(_contract_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# --------------------------------------------------------------------------- contracts


@cache
def shipment_in_model() -> type[BaseModel]:
    """A shipment record (SHIPMENTS contract) with its goods lines (ITEMS contract;
    `shipment_id` of a line may be left out: it is the shipment's)."""
    item_base = CONTRACTS["items"].pydantic_model()
    item = create_model(
        "ItemLineIn",
        __base__=item_base,
        __doc__="One goods line (ITEMS contract).",
        shipment_id=(str | None, None),
    )
    ship_base = CONTRACTS["shipments"].pydantic_model()

    def _lines(self: Any) -> Any:
        """Goods lines agree with their shipment; each error names the line's field."""
        sid = self.shipment_id
        seen: set[int] = set()
        ids: set[str] = set()
        errors: list[InitErrorDetails] = []

        def refuse(i: int, name: str, value: Any, message: str) -> None:
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("value_error", message),
                    loc=("items", i, name),
                    input=value,
                )
            )

        for i, line in enumerate(self.items):
            if line.shipment_id is not None and line.shipment_id != sid:
                refuse(
                    i,
                    "shipment_id",
                    line.shipment_id,
                    f"items[{i}].shipment_id {line.shipment_id!r} is not {sid!r}",
                )
            if line.line_no in seen:
                refuse(
                    i, "line_no", line.line_no, f"items[{i}].line_no {line.line_no} appears twice"
                )
            if line.item_id in ids:
                refuse(
                    i, "item_id", line.item_id, f"items[{i}].item_id {line.item_id!r} appears twice"
                )
            seen.add(line.line_no)
            ids.add(line.item_id)
        if errors:
            raise ValidationError.from_exception_data("ShipmentIn", errors)
        return self

    model = create_model(
        "ShipmentIn",
        __base__=ship_base,
        __doc__="A shipment as declared (SHIPMENTS contract) with its goods lines.",
        __validators__={"_lines": model_validator(mode="after")(_lines)},  # type: ignore[dict-item]
        items=(Annotated[list[item], Field(min_length=1, max_length=999)], ...),
        extras=(
            dict[ExtraName, ExtraValue] | None,
            Field(
                default=None,
                max_length=200,
                description="Columns of the administration's own export the served model "
                "was trained with (`extras` of the import mapping), by the export's column "
                "name: a number for a numeric one, text for a categorical one, null when "
                "unknown. A name the model was not trained with is refused (422); one left "
                "out is scored as missing.",
            ),
        ),
    )
    return model


ExtraName = Annotated[str, Field(min_length=1, max_length=128, pattern=TEXT)]
ExtraValue = (
    Annotated[str, Field(max_length=500, pattern=TEXT)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | None
)


def traveller_in_model() -> type[BaseModel]:
    return CONTRACTS["travellers"].pydantic_model()


class BatchIn(_Strict):
    """Rows are checked one by one (see the batch response), so each is any value here:
    a row that is not an object is that row's error (`not_a_record`), not the batch's."""

    records: list[Annotated[Any, WithJsonSchema({"type": "object"})]] = Field(
        min_length=1, max_length=MAX_BATCH
    )


_JSON_TYPES = {str: "a string", bool: "true or false", int: "a number", float: "a number"}


def not_a_record(value: Any) -> str | None:
    """Why a batch row is no record (a JSON object), or None when it is one."""
    if isinstance(value, dict):
        return None
    kind = (
        "null"
        if value is None
        else "an array"
        if isinstance(value, list)
        else _JSON_TYPES.get(type(value), type(value).__name__)
    )
    return f"a record is a JSON object, not {kind}"


# --------------------------------------------------------------------------- outputs


class RuleHitOut(BaseModel):
    rule_id: str
    rule_version: int
    severity: str | None = None


class WatchlistMatchOut(BaseModel):
    entry_id: str = Field(description="The listed entry matched (`<list>:<reference>`)")
    name: str | None = Field(
        None, description="The listed spelling matched (by document: the entry's name)"
    )
    party: str | None = Field(
        None, description="Role of the party matched, or the linked traveller's party"
    )
    by: Literal["name", "document"] = Field(
        description="`name`: a name similarity; `document`: a listed document number (exact)"
    )
    exact: bool
    traveller_record_id: str | None = Field(
        None, description="The linked traveller record (API/PNR) that matched; null: the party"
    )
    entity_type: str | None = Field(
        None, description="The listed entry's type: `individual` or `entity`"
    )
    score: int | None = Field(None, description="This hit's similarity, 0 to 100")
    words: int | None = Field(
        None, description="The name words a name match rests on (company forms dropped)"
    )
    weak: bool = Field(
        False,
        description="A weak match, counted as a near miss (never enough alone for a "
        "yellow or red lane): it rests on one word, or on one word and initials, or a "
        "company's name matches a listed individual's",
    )
    weak_reason: Literal["one_word", "initials", "company_individual"] | None = Field(
        None, description="Why the match is weak"
    )


class WatchlistOut(BaseModel):
    best_score: float = Field(
        description="Similarity of the hit that acted (`match`), 0 to 100 (% similar): of "
        "the parties and linked travellers, the best name match that counts (not weak), "
        "else the best one"
    )
    exact: bool = Field(
        description="A party's or linked traveller's name equals a listed name (after "
        "normalising), or its id or document number is listed"
    )
    match: WatchlistMatchOut | None = Field(
        None,
        description="The hit that acted (exact first, then the best that counts, not weak, "
        "then the best score)",
    )


class ShipmentOut(BaseModel):
    shipment_id: str
    office_code: str
    declared_at: dt.datetime
    content_hash: str
    score_id: int
    probability: float
    priority: float
    lane: Literal["red", "yellow", "green"]
    must_inspect: bool
    rule_hits: list[RuleHitOut]
    watchlist: WatchlistOut
    model_version: str
    feature_set_version: str
    scored_at: dt.datetime


class ContributionOut(BaseModel):
    feature: str
    value: float | None = Field(description="The feature's stored value (null: missing)")
    log_odds: float = Field(description="SHAP contribution to the raw score, in log-odds")


class ExplanationOut(BaseModel):
    shipment_id: str
    score_id: int
    model_version: str
    feature_set_version: str
    computed_on_demand: bool
    reasons: list[dict[str, Any]] = Field(
        description="The strongest contributions pushing the score up (at most 5, each at "
        "least 0.05 log-odds), with reason texts in English and Russian"
    )
    rule_hits: list[RuleHitOut]
    watchlist: WatchlistOut
    base_value: float | None = Field(
        default=None,
        description="The model's base value (log-odds); null when the model version "
        "cannot be loaded",
    )
    raw_score: float | None = Field(
        default=None,
        description="The raw score (log-odds): base_value plus the sum of all contributions; "
        "the probability is 1 / (1 + exp(-raw_score))",
    )
    contributions: list[ContributionOut] | None = Field(
        default=None,
        description="Every feature's contribution (log-odds), largest in size first",
    )


class RowErrorOut(BaseModel):
    index: int
    field: str
    reason: str


class BatchOut(BaseModel):
    stored: list[ShipmentOut]
    unchanged: list[ShipmentOut]
    errors: list[RowErrorOut]


class TravellerOut(BaseModel):
    traveller_record_id: str
    content_hash: str | None = Field(
        description="SHA-256 of the stored record, given with the unmasked record only (a "
        "hash of the whole record beside the masked one would let a guess of a hidden "
        "field be checked)"
    )
    masked: bool
    record: dict[str, Any]


class TravellerBatchOut(BaseModel):
    stored: list[str]
    unchanged: list[str]
    errors: list[RowErrorOut]


class SeizureLineOut(BaseModel):
    category: str
    quantity: float | None
    unit: str | None


class ReferralOutcomeOut(BaseModel):
    """What the inspection found, as recorded."""

    outcome_id: str
    finding: bool
    category: str | None
    quantity: float | None
    unit: str | None
    seizures: list[SeizureLineOut] = Field(
        default_factory=list,
        description="What was seized, one line per kind of goods, in the order recorded; "
        "`category` / `quantity` / `unit` above are the most serious line's",
    )
    notes: str | None
    recorded_by: str
    recorded_at: dt.datetime


class ReferralOut(BaseModel):
    id: int
    office_code: str
    queue_date: dt.date = Field(
        description="The queue day: the office's local calendar day (its time zone, "
        "CARAVAN_OFFICE_TIMEZONES, else CARAVAN_QUEUE_TIMEZONE, UTC by default)"
    )
    shipment_id: str
    rank: int
    priority: float
    lane: Literal["red", "yellow", "green"]
    selection_method: str
    selection_probability: float
    status: str
    over_capacity: bool
    claimed_by: str | None
    claimed_at: dt.datetime | None
    decided_by: str | None
    decided_at: dt.datetime | None
    waiver_reason: str | None
    created_at: dt.datetime = Field(
        description="When the entry was placed in the queue (on a view of the queue)"
    )
    age_seconds: float = Field(
        description="How long the shipment has waited, in seconds: from the shipment's "
        "declaration (its `declared_at`; for a shipment of an earlier day carried into "
        "this queue too) to the decision (inspection or waiver), to the closure of an "
        "entry closed without one (displaced), or until now while it awaits one; 0 "
        "before its declaration time. Not from `created_at` (when the entry was placed, "
        "often when somebody first opened the queue). The overdue list reads the same "
        "age: an entry awaiting a decision is overdue once it passes "
        "CARAVAN_OVERDUE_HOURS (a forced entry of a past day's queue at once)"
    )
    outcome: ReferralOutcomeOut | None = Field(
        default=None, description="The recorded outcome of an inspected referral"
    )
    closed_by: str | None = Field(default=None, description="Who closed it (from its audit entry)")
    closed_at: dt.datetime | None = None
    displaced_by: int | None = Field(
        default=None,
        description="Closed without a decision: the referral of the later red/yellow "
        "arrival that took its place",
    )
    declared_on: dt.date | None = Field(
        default=None,
        description="Day of the shipment's declaration in the office's time zone (as "
        "queue_date): earlier than queue_date for a forced shipment of an earlier day "
        "taken into this (today's) queue",
    )

    @computed_field(  # type: ignore[prop-decorator]
        description="A must-inspect rule or an exact watchlist hit forces the shipment in "
        "(its current priority is 2 or more): never displaced, and listed first in the "
        "queue's working order (forced entries first, then by rank)"
    )
    @property
    def forced(self) -> bool:
        return self.priority >= TOP_BAND


class LeftOutOut(BaseModel):
    """A red or yellow shipment of the day without a live entry in the queue."""

    shipment_id: str
    score_id: int
    probability: float
    priority: float
    lane: Literal["red", "yellow"]
    displaced_referral_id: int | None = Field(
        description="Its referral, when a later arrival displaced it; null: never placed"
    )


class QueueOut(BaseModel):
    office_code: str
    day: dt.date
    capacity: int
    exploration_share: float
    built_now: bool
    entries: list[ReferralOut]
    left_out: list[LeftOutOut] = Field(
        default_factory=list,
        description="Red and yellow shipments of the day that did not fit (capacity "
        "full of entries that could not be displaced), best first",
    )


class SeizureLineIn(_Strict):
    """One kind of goods seized: category, and quantity with unit (both or neither)."""

    category: Literal[FINDING_CATEGORIES] | None = None  # type: ignore[valid-type]
    quantity: float | None = Field(default=None, allow_inf_nan=False)
    unit: Literal[QUANTITY_UNITS] | None = None  # type: ignore[valid-type]


SINGLE_SEIZURE_FIELDS = ("category", "quantity", "unit")


class OutcomeIn(_Strict):
    finding: bool
    seizures: list[SeizureLineIn] | None = Field(
        default=None,
        max_length=MAX_SEIZURE_LINES,
        description="What was seized, one line per kind of goods (e.g. the weapons, and "
        "their rounds): a finding has one line or more, each with its category; a "
        "quantity with its unit (whole in PCE, NAR, PR, SET, CT); no two lines of the "
        "same category and unit. The outcome's `category` / `quantity` / `unit` are "
        "then the most serious line's (explosives, firearms, parts, ammunition, "
        "dual_use, other_contraband, documentary). Instead of `category` / "
        "`quantity` / `unit` (one line), never with them.",
    )
    category: Literal[FINDING_CATEGORIES] | None = None  # type: ignore[valid-type]
    quantity: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    unit: Literal[QUANTITY_UNITS] | None = None  # type: ignore[valid-type]
    notes: DecisionText = Field(default=None, max_length=2000, pattern=TEXT)

    @model_validator(mode="after")
    def _seizure_lines(self) -> OutcomeIn:
        """The seizure lines follow the rules (`policy.seizure_problems`); each
        problem names its field (`seizures[1].quantity`, or `quantity` of the single
        fields)."""
        single = [name for name in SINGLE_SEIZURE_FIELDS if getattr(self, name) is not None]
        if self.seizures is not None and single:
            both = ", ".join(single)
            raise ValidationError.from_exception_data(
                "OutcomeIn",
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "value_error",
                            "seizures: give the seizure lines either as `seizures` or as the "
                            "single `category`/`quantity`/`unit` (one line), not both "
                            "(also given: {both})",
                            {"both": both},
                        ),
                        loc=("seizures",),
                        input=self.seizures,
                    )
                ],
            )
        if self.seizures is None:
            cat, qty, unit = self.category, self.quantity, self.unit
            lines = [] if (cat, qty, unit) == (None, None, None) else [(cat, qty, unit)]
        else:
            lines = [(s.category, s.quantity, s.unit) for s in self.seizures]
        problems = seizure_problems(self.finding, [SeizureLine(*line) for line in lines])
        if problems:
            errors: list[InitErrorDetails] = []
            for p in problems:
                if self.seizures is None:
                    loc: tuple[str | int, ...] = (p.name(single=True),)
                elif p.index is None:
                    loc = ("seizures",)
                else:
                    loc = ("seizures", p.index, p.field)
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "value_error", "{text}", {"text": p.text(single=self.seizures is None)}
                        ),
                        loc=loc,
                        input=None,
                    )
                )
            raise ValidationError.from_exception_data("OutcomeIn", errors)
        return self


class WaiverIn(_Strict):
    reason: DecisionText = Field(default=None, max_length=2000, pattern=TEXT)


class OutcomeCorrectionIn(OutcomeIn):
    """The outcome as it really was (the fields of an outcome), and why the recorded
    one is corrected."""

    reason: DecisionText = Field(
        default=None,
        max_length=2000,
        pattern=TEXT,
        description="Why the recorded outcome (or waiver) is corrected; required, visible text",
    )


class OutcomeOut(BaseModel):
    outcome_id: str
    referral: ReferralOut
    label_file: str | None


class RuleIn(_Strict):
    """A targeting rule (see serving.rules_engine for the condition language)."""

    name: str = Field(min_length=1, max_length=200, pattern=TEXT)
    description: str = Field(default="", max_length=4000, pattern=TEXT)
    severity: Literal["info", "low", "medium", "high", "must_inspect"]
    effective_from: Annotated[dt.date | None, Field(strict=False)] = None
    effective_to: Annotated[dt.date | None, Field(strict=False)] = None
    condition: dict[str, Any]

    @field_validator("condition")
    @classmethod
    def _not_absurdly_deep(cls, value: dict[str, Any]) -> dict[str, Any]:
        """The engine refuses conditions nested more than MAX_DEPTH levels, naming
        the place; far deeper ones are refused here, before serialising them would
        fail (a 500)."""
        from serving.rules_engine import MAX_DEPTH

        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > 4 * MAX_DEPTH:  # (each level is a mapping and a list)
                raise ValueError(f"conditions are nested more than {MAX_DEPTH} levels deep")
            children = node.values() if isinstance(node, dict) else node
            if isinstance(node, dict | list):
                stack.extend((child, depth + 1) for child in children)
        return value


class RuleCreateIn(RuleIn):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,63}$")


class RuleOut(BaseModel):
    id: str
    version: int
    name: str
    description: str
    severity: str
    effective_from: dt.date | None
    effective_to: dt.date | None
    author: str
    active: bool
    condition: dict[str, Any]
    created_at: dt.datetime


class RuleImportOut(BaseModel):
    created: list[RuleOut]
    unchanged: list[str]


class RulesApplyIn(_Strict):
    """Which rules to apply to the shipments awaiting a decision, and of which queue
    days (each office's local calendar days, as its queue). Everything is optional:
    every active rule, today's shipments."""

    rule_ids: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,63}$")]] | None = Field(
        default=None,
        max_length=1000,
        description="The rules to apply (their newest versions); left out: every active rule",
    )
    day_from: Annotated[dt.date | None, Field(strict=False)] = Field(
        default=None,
        description="First queue day (each office's local day): at most 30 days ago; "
        "default day_to",
    )
    day_to: Annotated[dt.date | None, Field(strict=False)] = Field(
        default=None,
        description="Last queue day (each office's local day), today at the latest; "
        "default each office's today",
    )


class RulesApplyOut(BaseModel):
    examined: int = Field(description="Scored shipments of the days awaiting a decision")
    changed: int = Field(description="Of those, given a new score: their rule hits changed")
    newly_forced: int = Field(
        description="Of those, now forced into the queue (must-inspect) and not before"
    )
    skipped: int = Field(
        description="Decided or scored again while the rules were applied: left as they are"
    )
    rules: list[str] = Field(description='The rule versions applied, as "id@vN"')
    day_from: dt.date
    day_to: dt.date
    applied_at: dt.datetime
    changed_shipments: list[str]


class RulePerformanceOut(BaseModel):
    rule_id: str
    hits: int
    inspected: int
    findings: int
    finding_rate: float | None


class WatchlistLoadOut(BaseModel):
    list_name: str
    entries: int
    added: int
    removed: int
    changed: int
    rescreened: int
    rescored: int


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    entry_id: str
    at: dt.datetime
    kind: str
    actor: str
    entity: str | None
    entity_id: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerifyOut(BaseModel):
    ok: bool
    entries: int
    first_broken_seq: int | None
    first_broken_entry_id: str | None
    reason: str


# --------------------------------------------------------------------------- models


class PromoteIn(_Strict):
    """A promotion: the caller (named by the token) decides; a forced promotion of a
    version worse than the champion needs a reason."""

    reason: str | None = Field(
        default=None,
        max_length=2000,
        pattern=TEXT,
        description="Why (required when `force` is true)",
    )
    force: bool = Field(
        default=False, description="Promote even if worse than the champion on the same data"
    )


class ModelVersionOut(BaseModel):
    version: str
    aliases: list[str]
    target: str | None
    feature_set_version: str | None
    test_from: str | None
    test_to: str | None
    metrics: dict[str, float] = Field(
        description="Key metrics of the version's evaluation on its test window at training"
    )
    promoted_by: str | None
    promoted_at: str | None
    promotion_reason: str | None


class ModelsOut(BaseModel):
    champion: str | None
    challenger: str | None
    primary_metric: str
    versions: list[ModelVersionOut]


class PromotionOut(BaseModel):
    id: int
    model_name: str
    version: str
    alias: str
    previous: str | None
    promoted_by: str
    reason: str
    forced: bool
    via: str
    promoted_at: dt.datetime
    primary_metric: str
    primary_challenger: float | None
    primary_champion: float | None
    comparison_window: list[str] | None = Field(
        default=None,
        description="The shipments both versions were compared on (declaration times, "
        "from and to): the part of the version's test window after what either model "
        "trained or early-stopped on; null when nothing was compared",
    )


class PromotionResultOut(BaseModel):
    promotion: PromotionOut
    audit_seq: int
    serving_version: str | None = Field(
        description="The version this server now scores with (None: no model loaded)"
    )
    challenger: dict[str, Any] = Field(description="Key metrics of the promoted version")
    champion: dict[str, Any] | None = Field(
        description="Key metrics of the previous champion on the same test window"
    )
