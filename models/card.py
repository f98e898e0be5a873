"""The model card of a version: what it is, what it saw, how good it was, what
it must not be used for, and which attributes it never uses."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from features.registry import specs
from models.evaluate import FAMILIES, FAMILY_SHORT, capacity_columns

EXCLUDED_ATTRIBUTES = (
    "traveller nationality (a protected trait; never a model feature)",
    "ethnicity and religion (not collected)",
    "names, identification numbers, phones, e-mails and addresses as such (used only to "
    "link records and count history, never as model inputs)",
    "traveller date of birth and sex",
)

KNOWN_LIMITS = (
    "Labels exist only for inspected shipments, chosen by an earlier policy: metrics on the "
    "random-selection share, each draw weighted by 1/selection probability, are the "
    "unbiased estimate; metrics on all inspected shipments are optimistic or pessimistic "
    "depending on that policy, and their capacity is a share of the inspected shipments, "
    "not of all shipments.",
    "Inspections miss some trafficking: a label 'no finding' is not proof of innocence.",
    "A model trained on the synthetic world reflects the typologies simulated there; on real "
    "data it must be retrained and evaluated on that administration's outcomes.",
    "The score ranks shipments for inspection; it decides nothing. A named officer decides "
    "every inspection or waiver.",
)


def model_card(
    *,
    version: str,
    target: str,
    windows: dict[str, Any],
    rows: dict[str, int],
    params: dict[str, Any],
    positives: dict[str, int] | None = None,
    feature_set: str,
    data_hash: str,
    code_version: str,
    metrics: dict[str, Any],
    best_iteration: int,
    inputs: list[str] | None = None,
    unavailable: dict[str, str] | None = None,
    early_stopping: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card of a version. `inputs` are the trained model's input columns (the
    registry's features it uses and any export columns, `extra_*`); registered
    features not among them are listed as left out, with why: their inputs are
    declared absent in the data (`unavailable`), or they had no value."""
    registered = {s.name: s for s in specs()}
    used = list(registered) if inputs is None else list(inputs)
    unavailable = unavailable or {}
    features = [
        {"name": n, "family": registered[n].family.value, "description": registered[n].description}
        if n in registered
        else {"name": n, "family": "extra", "description": "a column of the export, kept as is"}
        for n in used
    ]
    left_out = [
        {
            "name": n,
            "reason": (
                f"its input {unavailable[n]} is not in the data"
                if n in unavailable
                else "no shipment of the training data has a value"
            ),
        }
        for n in registered
        if n not in used
    ]
    stopping = early_stopping or {"metric": "average_precision", "note": None}
    return {
        "model": "caravan-risk",
        "version": version,
        "purpose": "Rank shipments by the probability that an inspection finds "
        + ("arms, their parts, ammunition or explosives" if target == "arms" else "anything")
        + ", to help officers choose inspections.",
        "target": target,
        "algorithm": f"LightGBM gradient-boosted trees ({best_iteration} trees), "
        "inverse-propensity weighted",
        "data_windows": {k: [str(v[0]), str(v[1])] for k, v in windows.items()},
        "rows": rows,
        # the positives for the target per window: whether a window can be trusted
        "positives": positives,
        "feature_set_version": feature_set,
        "features": features,
        "features_left_out": left_out,
        "excluded_attributes": list(EXCLUDED_ATTRIBUTES),
        "parameters": params,
        "data_hash": data_hash,
        "code_version": code_version,
        "metrics": metrics,
        # how the number of trees was chosen (UAT2 DS F19): the validation metric and,
        # when it is not average precision, why
        "early_stopping": stopping,
        "known_limits": list(KNOWN_LIMITS)
        + ([f"Early stopping: {stopping['note']}"] if stopping.get("note") else []),
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# Model card: {card['model']} version {card['version']}",
        "",
        card["purpose"],
        "",
        f"- Algorithm: {card['algorithm']}",
        f"- Target: {card['target']}",
        f"- Feature set: {card['feature_set_version']} ({len(card['features'])} model inputs)",
        f"- Data hash: {card['data_hash']}; code version: {card['code_version']}",
        f"- Early stopping: {_stopping_text(card.get('early_stopping'))}",
        "",
    ]
    lines.append("## Data windows")
    lines += [
        f"- {k}: {v[0]} to {v[1]} ({card['rows'].get(k, 0):,} inspected shipments"
        + _positives_text(card, k)
        + ")"
        for k, v in card["data_windows"].items()
    ]
    lines += ["", "## Metrics (test window)", ""]
    lines += _capacity_table(card["metrics"])
    # the evaluation's notes (e.g. no finding in the test window: recall undefined)
    lines += [f"- Note: {n}" for n in card["metrics"].get("notes") or []]
    lines += ["", "## Attributes never used"] + [f"- {a}" for a in card["excluded_attributes"]]
    lines += ["", "## Known limits"] + [f"- {a}" for a in card["known_limits"]]
    lines += ["", "## Model inputs"] + [
        f"- `{f['name']}` ({f['family']}): {f['description']}" for f in card["features"]
    ]
    if card.get("features_left_out"):
        lines += ["", "## Registered features left out"] + [
            f"- `{f['name']}`: {f['reason']}" for f in card["features_left_out"]
        ]
    return "\n".join(lines) + "\n"


def positive_name(target: str, n: int) -> str:
    """What a positive of the target is called: "arms finding(s)", "finding(s)"."""
    noun = "arms finding" if target == "arms" else "finding"
    return f"{noun}{'' if n == 1 else 's'}"


def _positives_text(card: dict[str, Any], window: str) -> str:
    """The window's positives as the card's Markdown adds them (", N arms findings");
    nothing for a card written before positives were recorded."""
    positives = card.get("positives") or {}
    if window not in positives:
        return ""
    n = int(positives[window])
    return f", {n:,} {positive_name(str(card.get('target')), n)}"


def _capacity_table(metrics: dict[str, Any]) -> list[str]:
    """The capacity figures as a Markdown table whose header says, per column, what
    its capacity is a share of (the inspected shipments, the weighted random share,
    all shipments of the window), followed by each family's basis."""
    at = metrics.get("at_capacity", {})
    if not at:
        return []
    columns = capacity_columns(at)
    head = ["capacity"] + [f"{label} ({FAMILY_SHORT[f]})" for f, _, label in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cap, m in at.items():
        cells = [_cell(m.get(key)) for _, key, _ in columns]
        lines.append("| " + " | ".join([cap, *cells]) + " |")
    lines.append("")
    lines += [
        f"- {FAMILIES[f]}: {text}" for f, text in metrics.get("basis", {}).items() if f in FAMILIES
    ]
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _stopping_text(stopping: dict[str, Any] | None) -> str:
    if not stopping or not stopping.get("note"):
        return "on average precision of the validation window"
    return f"on {stopping.get('metric')} of the validation window: {stopping['note']}"


CARD_FILE = "model_card.json"  # reports/evaluation/vN/model_card.json (and .md), by `caravan train`


def stored_card(
    reports: Path,
    version: str,
    data_hash: str | None = None,
    artifact: Callable[[str], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The model card `caravan train` wrote for `version`: reports/evaluation/vN/
    model_card.json when it is that version's (its version and, given, data hash
    match the registry's), else the copy logged with the version's MLflow run
    (`artifact(path)`, e.g. after reports/ was cleaned); None when neither exists
    (a version registered before cards were written)."""
    path = reports / "evaluation" / f"v{version}" / CARD_FILE
    if path.is_file():
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            card = None
        if (
            isinstance(card, dict)
            and str(card.get("version")) == version
            and (data_hash is None or card.get("data_hash") == data_hash)
        ):
            return card
    if artifact is not None:
        try:
            card = artifact(f"evaluation/{CARD_FILE}")
        except Exception:  # no such artifact (or the run is gone): no card
            return None
        if isinstance(card, dict) and str(card.get("version")) == version:
            return card
    return None


class UnknownVersionError(LookupError):
    """No registered model version with that number."""


class NoCardError(LookupError):
    """A registered version without a model card (trained before cards were written)."""


def version_card(layout: Any, version: str) -> dict[str, Any]:
    """The model card of registered version `version` of the data directory `layout`.
    Raises UnknownVersionError or NoCardError, each naming why there is none."""
    from models.assess import registry

    if not layout.mlflow_db.exists():  # nothing trained (and do not create the store)
        raise UnknownVersionError(f"no model version {version}: no model is registered")
    reg = registry(layout)
    try:
        mv = reg.version(version)
    except Exception:
        raise UnknownVersionError(f"no model version {version}") from None
    card = stored_card(
        layout.reports,
        mv.version,
        mv.tags.get("data_hash"),
        lambda path: reg.artifact_json(mv.run_id, path),
    )
    if card is None:
        raise NoCardError(
            f"model version {version} has no model card (neither "
            f"reports/evaluation/v{version}/model_card.json nor its MLflow run holds one: "
            "it was registered before cards were written); retrain to get one"
        )
    return card
