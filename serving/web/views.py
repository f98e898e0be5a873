"""What the pages show, computed from the stored records (no HTTP here): the SHAP
waterfall drawn as inline SVG, the matched watchlist entry, linked travellers,
queue rows, and the checks of the outcome, waiver and rule forms."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import yaml
from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from data_contracts.fields import BIDI_CHARS, BLANK_TEXT, FORBIDDEN_TEXT_CHARS, text_problem
from data_contracts.schemas import FINDING_CATEGORIES, QUANTITY_UNITS, TRAVELLERS
from features.registry import _localised, refresh_reason_texts, render_reason
from serving import orm as m
from serving.history import HistoryStore, frame_of
from serving.policy import (
    MAX_SEIZURE_LINES,
    TOP_BAND,
    WATCHLIST_ALERT,
    SeizureLine,
    has_visible_text,
    principal_line,
    seizure_problems,
    weak_watchlist_match,
)
from serving.services import (
    PERSONAL_FIELDS,
    Services,
    StoredShipment,
    masked,
    prepare_shipment,
    prepare_traveller,
    purged_before,
    traveller_payload,
    was_purged,
)
from serving.web.i18n import Translator, reason_text

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_NOTES = 2000


def text_error(value: str) -> str | None:
    """The catalogue key of why the contracts' text rule refuses `value`
    (`data_contracts.fields.text_problem`: a control or bidirectional formatting
    character, or nothing visible but invisible characters), or None. Outcome notes
    go into the label file `caravan validate` reads; a decision's reason is shown
    and audited as written."""
    problem = text_problem(value)
    if problem is None:
        return None
    if problem == BLANK_TEXT:
        return "err.invisible_only"
    # (the character `text_problem` names: the first one refused)
    first = next(ch for ch in value if ch in FORBIDDEN_TEXT_CHARS)
    return "err.bidi_chars" if first in BIDI_CHARS else "err.control_chars"


# --------------------------------------------------------------------------- waterfall


@dataclass(frozen=True)
class Step:
    label: str
    contribution: float  # log-odds


@dataclass(frozen=True)
class Waterfall:
    base: float
    final: float
    steps: list[Step]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def waterfall_of(
    services: Services, stored: StoredShipment, lang: str, *, top: int = 8
) -> Waterfall:
    """Every feature's SHAP contribution for the stored vector and model version: the
    `top` largest in size, the rest summed in one step. Raises when the model version
    cannot be loaded."""
    from models.explain import contributions

    model = services.holder.version(stored.score.model_version)
    x = model.matrix([stored.score.feature_vector])
    contrib = contributions(model.booster, x)[0]
    names = list(model.names)
    extra = stored.score.explanation or {}
    context = dict(extra.get("context") or {})
    order = sorted(range(len(names)), key=lambda i: (-abs(float(contrib[i])), i))
    steps = []
    for i in order[:top]:
        value = stored.score.feature_vector.get(names[i])
        steps.append(Step(render_reason(names[i], value, context, lang), float(contrib[i])))
    rest = order[top:]
    if rest:
        t = Translator(lang)
        steps.append(
            Step(t("ship.waterfall_other", n=len(rest)), float(sum(contrib[i] for i in rest)))
        )
    base = float(contrib[-1])
    return Waterfall(base, float(sum(contrib)), steps)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def waterfall_svg(w: Waterfall, t: Translator) -> Markup:
    """A horizontal waterfall: one row per step, bars from the running total."""
    row_h, top, label_w, chart_x, chart_w = 26, 30, 440, 450, 380
    rows = len(w.steps) + 2
    height = top + rows * row_h + 30
    width = chart_x + chart_w + 90
    totals = [w.base]
    for s in w.steps:
        totals.append(totals[-1] + s.contribution)
    lo, hi = min(totals), max(totals)
    pad = max((hi - lo) * 0.05, 0.05)
    lo, hi = lo - pad, hi + pad

    def xpos(v: float) -> float:
        return chart_x + (v - lo) / (hi - lo) * chart_w

    parts = [
        f'<svg class="waterfall" role="img" aria-labelledby="wf-title" '
        f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="wf-title">{escape(t("ship.waterfall"))}</title>',
    ]

    def label(y: float, text: str, bold: bool = False) -> None:
        weight = ' font-weight="bold"' if bold else ""
        parts.append(
            f'<text x="{label_w}" y="{y + row_h * 0.65:.1f}" text-anchor="end" '
            f'font-size="12"{weight}><title>{escape(text)}</title>{escape(_clip(text, 54))}</text>'
        )

    y = float(top)
    label(y, t("ship.waterfall_base"), bold=True)
    parts.append(
        f'<line x1="{xpos(w.base):.1f}" x2="{xpos(w.base):.1f}" y1="{y + 3:.1f}" '
        f'y2="{y + row_h - 3:.1f}" stroke="#333" stroke-width="3"/>'
    )
    parts.append(
        f'<text x="{chart_x + chart_w + 8}" y="{y + row_h * 0.65:.1f}" font-size="12">'
        f"p={fmt_small(_sigmoid(w.base), t.lang, places=3)}</text>"
    )
    running = w.base
    for s in w.steps:
        y += row_h
        start, end = running, running + s.contribution
        x0, x1 = sorted((xpos(start), xpos(end)))
        colour = "#c0392b" if s.contribution > 0 else "#2166ac"
        label(y, s.label)
        parts.append(
            f'<rect x="{x0:.1f}" y="{y + 4:.1f}" width="{max(x1 - x0, 1.5):.1f}" '
            f'height="{row_h - 8}" fill="{colour}"/>'
        )
        parts.append(
            f'<text x="{chart_x + chart_w + 8}" y="{y + row_h * 0.65:.1f}" font-size="12">'
            f"{fmt_quantity(s.contribution, t.lang, places=3, signed=True)}</text>"
        )
        running = end
    y += row_h
    label(y, t("ship.waterfall_final"), bold=True)
    parts.append(
        f'<line x1="{xpos(w.final):.1f}" x2="{xpos(w.final):.1f}" y1="{y + 3:.1f}" '
        f'y2="{y + row_h - 3:.1f}" stroke="#333" stroke-width="3"/>'
    )
    parts.append(
        f'<text x="{chart_x + chart_w + 8}" y="{y + row_h * 0.65:.1f}" font-size="12" '
        f'font-weight="bold">p={fmt_small(_sigmoid(w.final), t.lang, places=3)}</text>'
    )
    axis_y = y + row_h + 6
    parts.append(
        f'<line x1="{chart_x}" x2="{chart_x + chart_w}" y1="{axis_y}" y2="{axis_y}" stroke="#666"/>'
    )
    for v in (lo + pad, (lo + hi) / 2, hi - pad):
        parts.append(
            f'<text x="{xpos(v):.1f}" y="{axis_y + 16}" font-size="11" text-anchor="middle">'
            f"{fmt_quantity(v, t.lang, places=2)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped


# --------------------------------------------------------------------------- records


def typed_shipment(
    session: Session, stored: StoredShipment
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The shipment and its goods lines with their contract types (dates as dates)."""
    lines = [
        i.payload
        for i in session.scalars(
            select(m.Item)
            .where(m.Item.shipment_id == stored.shipment.shipment_id)
            .order_by(m.Item.line_no)
        )
    ]
    prepared = prepare_shipment({**stored.shipment.payload, "items": lines}, stored=True)
    return prepared.record, prepared.items


def route_of(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(stage, country) from origin through dispatch and transit to destination."""
    out = [("origin", str(record.get("origin_country") or "?"))]
    if record.get("dispatch_country"):
        out.append(("dispatch", str(record["dispatch_country"])))
    for c in record.get("transit_countries") or []:
        out.append(("transit", str(c)))
    out.append(("destination", str(record.get("destination_country") or "?")))
    return out


@dataclass(frozen=True)
class WatchlistHit:
    party: str | None
    score: float
    exact: bool
    entry: dict[str, Any] | None
    # "name" (a name similarity) or "document" (a listed id or document number)
    by: str = "name"
    # the linked traveller record (API/PNR) that matched; None: the party itself
    traveller: str | None = None
    # why the match is weak ("one_word", "initials", "company_individual"; None: it is
    # not) and the name words it rests on (features.screening.weak_match)
    weak: str | None = None
    words: int | None = None
    # the listed spelling matched (an alias, the primary or original-script name)
    matched: str | None = None

    alert: float = WATCHLIST_ALERT * 100  # (percent)

    @property
    def near(self) -> bool:
        """Below the alert threshold, or weak: shown, but not counted in the priority."""
        return not self.exact and (self.score < self.alert or self.weak is not None)


def watchlist_hit(
    services: Services, record: Mapping[str, Any], stored: StoredShipment
) -> WatchlistHit | None:
    """The watchlist match of the shipment's score, with the listed entry: the
    match stored with the score (the entry that produced it, by name or document,
    of a party or a linked traveller), its details read from the current lists
    (only the id and name stored when the entry has left them). A score stored
    before matches were recorded: the parties screened again against the current
    lists, as the score did."""
    extra = stored.score.explanation or {}
    score = float(extra.get("watchlist_score", 0.0))
    exact = bool(extra.get("watchlist_exact", False))
    if score <= 0 and not exact:
        return None
    wl = services.history.snapshot().watchlist
    match = extra.get("watchlist_match")
    if "watchlist_match" not in extra:
        from data_contracts.schemas import SHIPMENTS
        from features.watchlist import operational
        from serving.scoring import watchlist_match

        if wl is None or wl.height == 0:
            return WatchlistHit(None, score, exact, None)
        ships = frame_of([dict(record)], SHIPMENTS.polars_schema)
        match = watchlist_match(operational(ships, wl).to_dicts()[0])
    if not match:
        return WatchlistHit(None, score, exact, None)
    entry_id = match["entry_id"]
    rows = [] if wl is None else wl.filter(pl.col("entry_id") == entry_id).to_dicts()
    entry = rows[0] if rows else {"entry_id": entry_id, "name": match.get("name")}
    return WatchlistHit(
        match.get("party"),
        score,
        exact,
        entry,
        str(match.get("by") or "name"),
        match.get("traveller_record_id"),
        match.get("weak_reason") if match.get("weak") else None,
        match.get("words"),
        match.get("name"),
    )


@dataclass
class LinkedTraveller:
    record_id: str
    party: str
    kind: str
    confidence: float
    record: dict[str, Any]
    masked: bool = True


_TRAVELLER_INDEX: dict[str, Any] = {}
_TRAVELLER_LOCK = threading.Lock()


def _traveller_index(session: Session) -> Any:
    """The comparison index of the stored traveller records, rebuilt only when records
    were added (keyed by their count and newest arrival)."""
    from features.travellers import TravellerIndex

    count, newest = session.execute(
        select(func.count(m.Traveller.traveller_record_id), func.max(m.Traveller.received_at))
    ).one()
    key = f"{id(session.get_bind())}|{count}|{newest}"
    with _TRAVELLER_LOCK:
        cached = _TRAVELLER_INDEX.get("key")
        if cached == key:
            return _TRAVELLER_INDEX["index"]
    if not count:
        return None
    typed = [
        prepare_traveller(row.payload, stored=True)[0]
        for row in session.scalars(select(m.Traveller))
    ]
    index = TravellerIndex(frame_of(typed, TRAVELLERS.polars_schema))
    with _TRAVELLER_LOCK:
        _TRAVELLER_INDEX.update(key=key, index=index)
    return index


def linked_travellers(
    session: Session, record: Mapping[str, Any], history: HistoryStore | None = None
) -> list[LinkedTraveller]:
    """Traveller records linked to the shipment's parties by
    `features.travellers.link_travellers`, masked: with `history`, the records the
    traveller features read (the loaded history, validated/, and the records the API
    stored: the feature state's index, as scoring links them), and the records stored
    in the database that history does not hold; without it, the stored ones only.
    A stored record is shown as stored, one of the loaded history as it holds it."""
    from features.context import PARTY_ROLES
    from features.travellers import link_travellers

    parties = pl.DataFrame(
        [
            {
                "party_key": role,
                "name": record.get(f"{role}_name"),
                "phone": record.get(f"{role}_phone"),
                "email": record.get(f"{role}_email"),
                "address": record.get(f"{role}_address"),
            }
            for role in PARTY_ROLES
        ],
        schema={c: pl.String for c in ("party_key", "name", "phone", "email", "address")},
    )
    found: list[dict[str, Any]] = []
    held: dict[str, dict[str, Any]] = {}
    if history is not None:
        with history.scoring() as state:  # (brought up to date with what just arrived)
            index = state.travellers.records
        if index.travellers.height:
            found = link_travellers(parties, index).to_dicts()
            held = history.held_travellers({link["traveller_record_id"] for link in found})
    stored_index = _traveller_index(session)
    if stored_index is not None:
        more = link_travellers(parties, stored_index).to_dicts()
        # (a record the history holds is linked as the features link it, above)
        more_ids = {link["traveller_record_id"] for link in more}
        in_history = set() if history is None else set(history.held_travellers(more_ids))
        found += [link for link in more if link["traveller_record_id"] not in in_history]
    ids = list({link["traveller_record_id"] for link in found})
    by_id: dict[str, dict[str, Any]] = {
        r.traveller_record_id: dict(r.payload)
        for r in session.scalars(
            select(m.Traveller).where(m.Traveller.traveller_record_id.in_(ids))
        )
    }
    cutoff = purged_before(session) if set(held) - set(by_id) else None
    out = []
    order = sorted(
        found, key=lambda f: (-float(f["confidence"]), f["traveller_record_id"], f["party_key"])
    )
    for link in order:
        rid = link["traveller_record_id"]
        shown = by_id.get(rid)
        if shown is None and rid in held:
            shown = traveller_payload(held[rid])
            if was_purged(shown, cutoff):  # (kept by the features until a restart)
                continue
        if shown is None:
            continue
        out.append(
            LinkedTraveller(
                rid, link["party_key"], link["link_kind"], float(link["confidence"]), masked(shown)
            )
        )
    return out


TRAVELLER_SHOWN = (
    "surname",
    "given_names",
    "name_native",
    "date_of_birth",
    "nationality",
    "document_number",
    "route",
    "departure_at",
)


def reasons_of(services: Services, stored: StoredShipment) -> list[dict[str, Any]]:
    """Stored reasons, or computed on demand (the same function as the API)."""
    from serving.services import explanation

    extra = stored.score.explanation or {}
    if extra.get("reasons") is not None:
        found = refresh_reason_texts(list(extra["reasons"]), dict(extra.get("context") or {}))
    else:
        try:
            found = list(explanation(services, stored)["reasons"])
        except Exception:  # model version not loadable: show no reasons rather than fail
            return []
    # each reason's effect as a factor on the odds (exp of its log-odds: the unit of
    # the chart); on a rare event the probability moves by too little to read
    return [{**r, "odds_factor": math.exp(float(r.get("log_odds") or 0.0))} for r in found]


# An effect on the probability this small shows as "+0.000": no reason to show an
# officer next to a rule or watchlist hit that drove the priority.
NEGLIGIBLE_EFFECT = 0.0005
SEVERITY_ORDER = {"must_inspect": 5, "high": 4, "medium": 3, "low": 2, "info": 1}


def driver_texts(
    hits: Sequence[tuple[str, str | None]],
    watchlist_score: float,
    watchlist_exact: bool,
    t: Translator,
    *,
    watchlist_weak: bool = False,
) -> list[str]:
    """What raised the priority besides the model: each rule hit (name and severity,
    the most severe first) and the watchlist match (not a near miss or a weak
    match), in the officer's language."""
    ordered = sorted(hits, key=lambda h: -SEVERITY_ORDER.get(h[1] or "", 0))
    out = [
        t("reason.rule", name=name, severity=t.severity(sev))
        if t.severity(sev)
        else t("reason.rule_plain", name=name)
        for name, sev in ordered
    ]
    if watchlist_exact:
        out.append(t("reason.watchlist_exact"))
    elif watchlist_score >= WATCHLIST_ALERT * 100 and not watchlist_weak:  # (nor a near miss)
        out.append(t("reason.watchlist", score=f"{watchlist_score:.0f}"))
    return out


def priority_reasons(
    drivers: list[str], reasons: Sequence[Mapping[str, Any]], lang: str, *, top: int = 2
) -> list[str]:
    """The reasons of a queue entry: what drove its priority first (rule and watchlist
    hits), then the model's reasons; next to a driver, model reasons whose effect on the
    probability is negligible are left out."""
    shap = [
        r
        for r in reasons
        if not drivers or abs(float(r.get("probability_effect") or 0.0)) >= NEGLIGIBLE_EFFECT
    ]
    texts = drivers + [reason_text(r, lang) for r in shap]
    return texts[: max(top, len(drivers))]


# --------------------------------------------------------------------------- queue


@dataclass
class QueueRow:
    ref: dict[str, Any]
    reasons: list[str]
    overdue: bool
    consignee: str
    origin: str
    mode: str

    @property
    def forced(self) -> bool:
        """A must-inspect rule or an exact watchlist hit put it in (its current
        priority is in the forced band): listed first in the default order."""
        return forced_entry(self.ref)


def forced_entry(o: Mapping[str, Any]) -> bool:
    """The entry's shipment is forced in (a must-inspect rule or an exact watchlist
    hit, by its current priority: `policy.TOP_BAND` and above), as the API's
    `forced` flag says."""
    return float(o["priority"]) >= TOP_BAND


def queue_rows(
    session: Session,
    services: Services,
    refs: Sequence[m.Referral],
    outs: Sequence[dict[str, Any]],
    overdue_ids: set[int],
    lang: str,
) -> list[QueueRow]:
    ids = [r.shipment_id for r in refs]
    ships = {
        s.shipment_id: s
        for s in session.scalars(select(m.Shipment).where(m.Shipment.shipment_id.in_(ids)))
    }
    scores = {
        s.id: s
        for s in session.scalars(
            select(m.Score).where(m.Score.id.in_([r.score_id for r in refs if r.score_id]))
        )
    }
    hits: dict[int, list[tuple[str, str | None]]] = {}
    for score_id, rule_id, name, severity in session.execute(
        select(m.RuleHit.score_id, m.RuleHit.rule_id, m.Rule.name, m.RuleVersion.severity)
        .join(m.Rule, m.Rule.rule_id == m.RuleHit.rule_id)
        .outerjoin(
            m.RuleVersion,
            (m.RuleVersion.rule_id == m.RuleHit.rule_id)
            & (m.RuleVersion.version == m.RuleHit.rule_version),
        )
        .where(m.RuleHit.score_id.in_(list(scores)))
        .order_by(m.RuleHit.score_id, m.RuleHit.rule_id)
    ):
        if score_id is not None:
            hits.setdefault(int(score_id), []).append((str(name or rule_id), severity))
    t = Translator(lang)
    rows = []
    for ref, out in zip(refs, outs, strict=True):
        score = scores.get(ref.score_id or -1)
        reasons: list[dict[str, Any]] = []
        drivers: list[str] = []
        ship = ships.get(ref.shipment_id)
        if score is not None:
            if ship is not None:
                reasons = reasons_of(services, StoredShipment(ship, score, []))
            extra = score.explanation or {}
            drivers = driver_texts(
                hits.get(score.id, []),
                float(extra.get("watchlist_score") or 0.0),
                bool(extra.get("watchlist_exact", False)),
                t,
                watchlist_weak=weak_watchlist_match(extra.get("watchlist_match")),
            )
        payload = ship.payload if ship is not None else {}
        rows.append(
            QueueRow(
                out,
                priority_reasons(drivers, reasons, lang),
                ref.id in overdue_ids,
                str(payload.get("consignee_name", "")),
                str(payload.get("origin_country", "")),
                t.mode(str(payload.get("mode", ""))),
            )
        )
    return rows


def filter_sort(
    rows: list[QueueRow], lane: str, status: str, exploration: bool, sort: str
) -> list[QueueRow]:
    """The rows the filters keep, in the chosen order: "priority" (highest first),
    "age" (longest waiting first), else the default: forced entries (must-inspect
    rule, exact watchlist hit) first, then by rank (a forced arrival placed after the
    queue was built has the next rank, but must not wait below the green entries;
    the stored ranks are never renumbered)."""
    out = [
        r
        for r in rows
        if (lane == "all" or r.ref["lane"] == lane)
        and (status == "all" or r.ref["status"] == status)
        and (not exploration or r.ref["selection_method"] == "random")
    ]
    if sort == "priority":
        out.sort(key=lambda r: (-r.ref["priority"], r.ref["rank"]))
    elif sort == "age":
        out.sort(key=lambda r: (-r.ref["age_seconds"], r.ref["rank"]))
    else:
        out.sort(key=lambda r: (not r.forced, r.ref["rank"]))
    return out


def displaced(o: Mapping[str, Any]) -> bool:
    """An entry closed without a decision: a later arrival took its place."""
    return o["status"] == "closed" and o.get("decided_at") is None


def forced_over_capacity(o: Mapping[str, Any]) -> bool:
    """A must-inspect or exact-watchlist entry placed beyond the capacity (a
    displaced entry is neither: its slot went to its successor)."""
    return bool(o["over_capacity"]) and not displaced(o)


def capacity_used(outs: Sequence[dict[str, Any]], capacity: int) -> dict[str, int]:
    """The slots taken (entries within capacity, not displaced) and how they stand;
    decided + claimed + open = used. Forced entries beyond the capacity are counted
    apart (`over`)."""
    inside = [o for o in outs if not o["over_capacity"] and not displaced(o)]
    return {
        "used": len(inside),
        "capacity": capacity,
        "decided": sum(o["status"] in ("inspected", "waived", "closed") for o in inside),
        "claimed": sum(o["status"] == "claimed" for o in inside),
        "open": sum(o["status"] == "open" for o in inside),
        "over": sum(forced_over_capacity(o) for o in outs),
    }


# --------------------------------------------------------------------------- forms


@dataclass
class FormErrors:
    fields: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)

    def add(self, name: str, message: str) -> None:
        self.fields.setdefault(name, message)


@dataclass(frozen=True)
class OutcomeForm:
    finding: bool
    category: str | None
    quantity: float | None
    unit: str | None
    notes: str
    seizures: tuple[SeizureLine, ...] = ()


SEIZURE_ROWS = 3  # the rows of category / quantity / unit an outcome form has (at least)


def seizure_field(name: str, row: int) -> str:
    """A seizure row's field in the outcome and correction forms: `category`,
    `quantity`, `unit` for the first row (the names of the single-line form),
    `category-1` ... for the next."""
    return name if row == 0 else f"{name}-{row}"


def check_outcome(form: Mapping[str, str], t: Translator) -> tuple[OutcomeForm | None, FormErrors]:
    """The outcome form's values, or each problem beside its field: the seizure rows
    (empty ones left out) follow `policy.seizure_problems`, each problem shown
    beside its row's field."""
    errors = FormErrors()
    finding_raw = form.get("finding", "")
    finding = finding_raw == "yes"
    if finding_raw not in ("yes", "no"):
        errors.add("finding", t("err.finding_required"))
    rows: list[tuple[int, SeizureLine]] = []  # (row of the form, its line)
    for row in range(MAX_SEIZURE_LINES):  # (a correction shows every recorded line)
        cat_name, qty_name, unit_name = (
            seizure_field(n, row) for n in ("category", "quantity", "unit")
        )
        category = form.get(cat_name) or None
        if category is not None and category not in FINDING_CATEGORIES:
            errors.add(cat_name, t("error.field"))
            category = None
        quantity: float | None = None
        qty_raw = (form.get(qty_name) or "").strip()
        if qty_raw:
            quantity, problem = parse_quantity(qty_raw)
            if problem is not None:
                errors.add(qty_name, t(problem, value=qty_raw))
        unit = form.get(unit_name) or None
        if unit is not None and unit not in QUANTITY_UNITS:
            errors.add(unit_name, t("error.field"))
            unit = None
        if form.get(cat_name) or qty_raw or form.get(unit_name):
            rows.append((row, SeizureLine(category, quantity, unit)))
    if finding_raw in ("yes", "no"):
        for p in seizure_problems(finding, [line for _, line in rows]):
            name = seizure_field(p.field, rows[p.index][0]) if p.index is not None else "category"
            params = dict(p.params)
            if "index" in params:  # another line: by its row on the form (1, 2 ...)
                params["line"] = rows[int(params.pop("index"))][0] + 1
            errors.add(name, t(f"err.{p.code}", value="", **params))
    notes = form.get("notes") or ""
    if len(notes) > MAX_NOTES:
        errors.add("notes", t("err.too_long", n=MAX_NOTES))
    elif (problem := text_error(notes)) is not None:
        errors.add("notes", t(problem))
    if errors:
        return None, errors
    lines = tuple(line for _, line in rows)
    top = principal_line(lines)
    return OutcomeForm(
        finding,
        top.category if top else None,
        top.quantity if top else None,
        top.unit if top else None,
        notes,
        lines,
    ), errors


_SPACES = re.compile(r"[ \u00a0\u2009\u202f]")
_GROUPED = re.compile(r"^\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+(?:[.,]\d+)?$")
_PLAIN = re.compile(r"^(?:\d+(?:[.,]\d*)?|[.,]\d+)$")


def parse_quantity(raw: str) -> tuple[float | None, str | None]:
    """A seized quantity as typed: (value, None), or (None, the catalogue key of the
    problem). A comma or dot is a decimal mark ("2,5" is 2.5); a number that could
    also be read with a thousands separator ("10,000", "2.500", "1,234.5") is refused
    rather than guessed; spaces between groups of three digits ("10 000") are read
    as thousands separators."""
    text = raw.strip()
    if "," in text and "." in text:  # "1,234.5" or "1.234,5": which one is decimal?
        return None, "err.quantity_ambiguous"
    if _GROUPED.match(text):
        text = _SPACES.sub("", text)
    if not _PLAIN.match(text):
        return None, "err.quantity_number"
    integer, mark, fraction = text.replace(",", ".").partition(".")
    if mark and len(fraction) == 3 and integer.strip("0"):
        return None, "err.quantity_ambiguous"
    quantity = float(text.replace(",", "."))
    if not math.isfinite(quantity) or quantity < 0:
        return None, "err.quantity_number"
    return quantity, None


def check_waiver(form: Mapping[str, str], t: Translator) -> tuple[str | None, FormErrors]:
    errors = FormErrors()
    reason = (form.get("reason") or "").strip()
    if not has_visible_text(reason):  # blank, or only invisible characters (U+200B ...)
        errors.add("reason", t("err.reason_required"))
    elif len(reason) > MAX_NOTES:
        errors.add("reason", t("err.too_long", n=MAX_NOTES))
    elif (problem := text_error(reason)) is not None:
        errors.add("reason", t(problem))
    return (None if errors else reason), errors


RULE_FIELDS = (
    "id",
    "name",
    "description",
    "severity",
    "effective_from",
    "effective_to",
    "condition",
)


def rule_data(form: Mapping[str, str], t: Translator) -> tuple[dict[str, Any] | None, FormErrors]:
    """The rule form as the data `services.save_rule` takes (condition parsed from
    YAML or JSON); a condition that cannot be read is an error beside it."""
    errors = FormErrors()
    data: dict[str, Any] = {
        "name": (form.get("name") or "").strip(),
        "description": (form.get("description") or "").strip(),
        "severity": form.get("severity") or "",
    }
    for key in ("effective_from", "effective_to"):
        if form.get(key):
            data[key] = form[key]
    text = form.get("condition") or ""
    from serving.rules_engine import safe_load_yaml  # unquoted dates stay text (checked)

    try:
        condition = safe_load_yaml(text) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        errors.add("condition", t("rules.yaml_error", msg=f"{getattr(exc, 'problem', exc)}{where}"))
        return None, errors
    if not isinstance(condition, dict):
        errors.add("condition", t("rules.condition_mapping"))
        return None, errors
    data["condition"] = json.loads(json.dumps(condition, default=str))
    return data, errors


def rule_errors(paths_messages: Sequence[tuple[str, str]], t: Translator) -> FormErrors:
    """Rule validation errors placed beside the form field their path starts with."""
    errors = FormErrors()
    for path, message in paths_messages:
        head = re.split(r"[.\[]", path, maxsplit=1)[0]
        name = head if head in RULE_FIELDS else None
        if name == "condition":
            text = f"{message} ({t('rules.at', path=path)})"
            errors.fields["condition"] = (
                errors.fields["condition"] + "; " + text if "condition" in errors.fields else text
            )
        elif name is not None:
            errors.add(name, message)
        else:
            errors.general.append(f"{path}: {message}")
    return errors


def rule_figures(versions: Sequence[m.RuleVersion]) -> dict[str, Any] | None:
    """The figures of the rule whose `versions` the rule page shows, per version and
    over all versions (`services.rule_performance_rows`, read through the session the
    versions were loaded with); None for a new rule."""
    from sqlalchemy.orm import object_session

    from serving.services import rule_performance_rows

    session = object_session(versions[0]) if versions else None
    if session is None:
        return None
    rows = rule_performance_rows(session, versions[0].rule_id)
    if not rows:
        return None
    return {**rows[0], "by_version": {f["version"]: f for f in rows[0]["versions"]}}


def condition_text(condition: Any) -> str:
    return str(
        yaml.safe_dump(condition, allow_unicode=True, sort_keys=False, default_flow_style=False)
    )


def fmt_dt(value: Any, zone: ZoneInfo | None = None) -> str:
    """A time to the minute: in UTC, named ("2026-11-29 19:30 UTC"), or, on the page
    of one office (its queue, a shipment of it), in the office's time zone, named with
    its UTC offset at that instant ("2026-11-30 01:30 (Asia/Bishkek, UTC+06:00)"), as
    the office's queue days are counted. A naive time is UTC (as stored)."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        if zone is None or zone.key == "UTC":
            return aware.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        local = aware.astimezone(zone)
        return f"{local:%Y-%m-%d %H:%M} ({zone.key}, UTC{utc_offset(local)})"
    if isinstance(value, str) and "T" in value:
        try:
            return fmt_dt(dt.datetime.fromisoformat(value), zone)
        except ValueError:
            return value
    return "" if value is None else str(value)


def utc_offset(local: dt.datetime) -> str:
    """The UTC offset of an aware time: "+06:00", "-03:30"."""
    offset = local.utcoffset() or dt.timedelta()
    minutes = int(abs(offset).total_seconds()) // 60
    sign = "-" if offset < dt.timedelta() else "+"
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def fmt_age(seconds: float, lang: str = "en") -> str:
    t = Translator(lang)
    hours = int(seconds // 3600)
    if hours >= 48:
        return t("age.days", n=hours // 24)
    if hours >= 1:
        return t("age.hours", n=hours)
    return t("age.minutes", n=int(seconds // 60))


def fmt_quantity(
    value: float | None, lang: str = "en", places: int | None = None, signed: bool = False
) -> str:
    """A figure without ambiguity: groups of three digits split by a no-break space,
    the decimal mark of the language ("10 000", "2.5" / "2,5"), as the reason texts
    write numbers (`features.registry._localised`). Without `places` a whole number
    has no decimals ("41", not "41.0") and others at most six; with `places` exactly
    that many ("0.0098", "140 951 048,05"). `signed`: "+" before a positive value.
    None (no value): an empty text."""
    if value is None:
        return ""
    number = float(value)
    if places is not None:
        text = f"{number:,.{places}f}"
    elif number.is_integer():
        text = f"{number:,.0f}"
    else:
        text = f"{number:,.6f}".rstrip("0").rstrip(".")
    if signed and number >= 0 and not text.startswith("-"):
        text = "+" + text
    return _localised(text.replace(",", "\u00a0"), lang)


_SUPERSCRIPT = str.maketrans(
    "-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
)


def fmt_small(value: float | None, lang: str = "en", places: int = 2) -> str:
    """A probability or priority that stays readable when it is small: `places`
    decimals from 10**-places up ("0.45", "2.31"); below that two significant digits,
    as a decimal down to 0.0001 ("0.0034", "0.00012") and as a power of ten under it
    ("3.2 × 10⁻⁹"), so that the entries of a queue whose model probabilities are tiny
    can be told apart (all "0.00" before: found in review). 0 is "0.00". Written the
    reader's way, as `fmt_quantity` (a decimal comma in Russian)."""
    if value is None:
        return ""
    number = float(value)
    if not math.isfinite(number) or number == 0 or abs(number) >= 10.0**-places:
        return fmt_quantity(number, lang, places=places)
    mantissa, _, exponent = f"{number:.1e}".partition("e")
    power = int(exponent)  # (after rounding to two significant digits)
    if power >= -places:
        return fmt_quantity(number, lang, places=places)
    if power >= -4:
        return fmt_quantity(number, lang, places=1 - power)
    return f"{_localised(mantissa, lang)}\u00a0×\u00a010{str(power).translate(_SUPERSCRIPT)}"


def fmt_percent(value: float | None, lang: str = "en") -> str:
    """A probability (0 to 1) as a percentage to three significant digits, trailing
    zeros left out: "12.5%" / "12,5 %", "33.3%", "100%", "0.02%"."""
    if value is None:
        return ""
    pct = float(value) * 100
    if pct <= 0 or not math.isfinite(pct):
        text = fmt_quantity(0 if not math.isfinite(pct) else pct, lang, places=0)
    else:
        places = max(0, 2 - math.floor(math.log10(pct)))
        text = f"{pct:.{places}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        text = fmt_quantity(float(text), lang)
    return f"{text}\u00a0%" if lang == "ru" else f"{text}%"


def traveller_value(name: str, value: Any, zone: ZoneInfo | None = None) -> str:
    """A traveller record's field as the page shows it: a journey as its airports in
    order, times like the rest of the page (in `zone`, the office's, named)."""
    if value is None:
        return ""
    if name == "route" and isinstance(value, list | tuple):
        return " → ".join(str(v) for v in value)
    if name.endswith("_at"):
        return fmt_dt(value, zone)
    return str(value)


__all__ = ["PERSONAL_FIELDS"]
