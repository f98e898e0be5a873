"""`caravan train | evaluate | promote | score`: the model's life cycle, wiring the
features on disk, the models layer and the MLflow registry."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data_contracts.settings import DataLayout
from features.build import CONTEXT
from features.inputs import EXTRAS_ARTIFACT, model_extras_tag
from features.registry import feature_set_version
from models.assess import (
    Assessment,
    Baseline,
    assess,
    assess_version,
    read_features,
    read_outcomes,
    read_truth,
    registry,
    with_model_codes,
)
from models.card import card_markdown, model_card
from models.dataset import (
    LABEL,
    Split,
    Target,
    data_hash,
    labelled,
    matrix,
    time_split,
    without_features,
)
from models.disparity import as_json as disparity_json
from models.disparity import disparity_caption, plot_disparity, selection_by_group
from models.evaluate import Evaluation
from models.explain import contributions, explain_frame
from models.promotion import Promotion, PromotionRefusedError, promote
from models.registry import CHALLENGER, CHAMPION
from models.report import (
    CALIBRATION_NOTE,
    capacity_curve,
    categorical_inputs,
    plot_calibration,
    plot_capacity,
    plot_scores,
    plot_shap,
    plot_typologies,
    score_caption,
    shap_caption,
    write_report,
)
from models.train import TrainConfig, fit, predict, training_columns
from pipelines.validate import write_parquet

Say = Callable[[str], None]
SHAP_SAMPLE = 1_000
EXPLAIN_SHARE = 0.10  # explained at scoring time: the riskiest 10 %; the rest on demand


def code_version() -> str:
    from importlib.metadata import version

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return f"{version('caravan')}+{commit}" if commit else version("caravan")


def _feature_set(layout: DataLayout) -> dict[str, Any]:
    path = layout.features / "feature_set.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _rules_scores(layout: DataLayout, window: pl.DataFrame) -> np.ndarray | None:
    """The synthetic world's historical rules-only policy, for comparison. Its scores
    are a handful of rule probabilities, so thousands of shipments tie at the cutoff:
    the evaluation compares its exact expectation over those ties
    (`models.evaluate.expected_caught`), never one random tie-break."""
    if not (layout.truth / "truth.parquet").exists():
        return None
    from pipelines.synthetic.policy import rule_hits

    ships = pl.read_parquet(layout.validated / "shipments.parquet").join(
        window.select("shipment_id"), on="shipment_id", how="semi"
    )
    items = pl.read_parquet(layout.validated / "items.parquet").join(
        window.select("shipment_id"), on="shipment_id", how="semi"
    )
    hits = rule_hits(ships, items)
    joined = window.select("shipment_id").join(
        hits, on="shipment_id", how="left", maintain_order="left"
    )
    return joined["p_rule"].fill_null(0.0).to_numpy()


def rules_baseline(layout: DataLayout) -> Baseline:
    """The synthetic world's rules-only policy, compared beside the model."""
    return lambda window: _rules_scores(layout, window)


def _evaluate_on(
    layout: DataLayout,
    booster: Any,
    version: str | None,
    test: pl.DataFrame,
    features: pl.DataFrame,
    folder: Path,
) -> tuple[Evaluation, Path]:
    """Evaluate on the test window and write the report with its plots."""
    a = assess(booster, version, test, features, read_truth(layout), rules_baseline(layout))
    return a.evaluation, _write_report(a, folder)


def _write_report(a: Assessment, folder: Path) -> Path:
    ev, scores, labels, random = a.evaluation, a.test_scores, a.labels, a.random_share
    folder.mkdir(parents=True, exist_ok=True)
    curves = {"all inspected": capacity_curve(scores, labels)}
    if labels[random].sum() > 0:
        # each draw weighted by 1/selection probability, as in the table (UAT2 DS F9)
        curves["random share (weighted)"] = capacity_curve(
            scores[random], labels[random], ev.random_weights
        )
    if a.truth is not None:
        bad = a.window.select("shipment_id").join(
            a.truth, on="shipment_id", how="left", maintain_order="left"
        )["is_trafficking"]
        t = capacity_curve(a.window_scores, bad.fill_null(False).to_numpy().astype(float))
        curves["true (all shipments)"] = t  # the hit rate at k % of all shipments too
    plot_capacity(curves, folder / "capacity.png")
    plot_calibration(ev, folder / "calibration.png")
    captions = {"calibration.png": CALIBRATION_NOTE}
    captions["scores.png"] = score_caption(plot_scores(scores, labels, folder / "scores.png"))
    plot_typologies(ev, folder / "typologies.png")  # only when the truth is known
    x_test = a.x_test
    sample = (
        x_test[:SHAP_SAMPLE]
        if len(x_test) <= SHAP_SAMPLE
        else x_test[np.random.default_rng(0).choice(len(x_test), SHAP_SAMPLE, replace=False)]
    )
    # categories (integer codes of no order) are drawn grey, not low to high
    categorical = categorical_inputs(a.booster, a.names)
    plot_shap(
        contributions(a.booster, sample),
        sample,
        a.names,
        folder / "shap_beeswarm.png",
        categorical,
        title=(
            f"{len(sample):,} of the {len(x_test):,} inspected test shipments (at random)"
            if len(sample) < len(x_test)
            else f"all {len(x_test):,} inspected test shipments"
        ),
    )
    captions["shap_beeswarm.png"] = shap_caption(len(sample), len(x_test), categorical)
    by_group = selection_by_group(a.window, a.window_scores, k=DISPARITY_CAPACITY, truth=a.truth)
    (folder / "disparity.json").write_text(
        json.dumps(disparity_json(by_group, DISPARITY_CAPACITY), indent=2)
    )
    plot_disparity(by_group, folder / "disparity.png", DISPARITY_CAPACITY)
    captions["disparity.png"] = disparity_caption(by_group, DISPARITY_CAPACITY)
    # kept beside the plots: `caravan train` writes the page again once the version is known
    (folder / CAPTIONS).write_text(json.dumps(captions, indent=2, ensure_ascii=False))
    return write_report(ev, folder, _images(folder), captions)


@dataclass(frozen=True)
class TrainRun:
    version: str
    evaluation: Evaluation
    report: Path
    best_iteration: int
    rows: dict[str, int]
    # validated outcomes not trained on: their shipment is not in validated/ at all
    # (quarantined or never declared), so no feature row can exist for it
    outcomes_without_shipment: int = 0
    positives_without_shipment: int = 0
    # the rule that chose the number of trees: {"metric": ..., "note": why or None}
    early_stopping: dict[str, Any] | None = None


class StaleFeaturesError(ValueError):
    """Validated outcomes of validated shipments that features/ does not hold yet."""


def _unusable_outcomes(
    layout: DataLayout, features: pl.DataFrame, outcomes: pl.DataFrame, target: Target
) -> tuple[int, int]:
    """Refuse to train when validated outcomes lack feature rows because features/ is
    older than validated/ (their shipments are validated: `caravan features` makes the
    rows); a seizure must not silently miss the retraining it was recorded for. The
    outcomes whose shipment is not validated at all (quarantined) can never have a
    feature row: counted (all, positive) and reported, not refused."""
    missing = without_features(features, outcomes, target)
    if missing.height == 0:
        return 0, 0
    path = layout.validated / "shipments.parquet"
    known = (
        pl.read_parquet(path, columns=["shipment_id"])
        if path.exists()
        else pl.DataFrame({"shipment_id": []}, schema={"shipment_id": pl.String})
    )
    stale = missing.join(known, on="shipment_id", how="semi")
    if stale.height:
        positives = int(stale[LABEL].sum())
        examples = ", ".join(stale["shipment_id"].head(3).to_list())
        raise StaleFeaturesError(
            f"{stale.height:,} validated outcome(s) ({positives:,} positive for "
            f"{target.value}) are of shipments that features/ does not hold yet (e.g. "
            f"{examples}): features/ is older than validated/; run `caravan features` "
            "first, then train"
        )
    return missing.height, int(missing[LABEL].sum())


def run_train(
    layout: DataLayout,
    *,
    target: Target = Target.ARMS,
    until: dt.datetime | None = None,
    config: TrainConfig | None = None,
    say: Say | None = None,
) -> TrainRun:
    say = say or (lambda _m: None)
    config = config or TrainConfig()
    say("reading features and outcomes")
    features = read_features(layout)
    outcomes = read_outcomes(layout)
    orphans, orphan_positives = _unusable_outcomes(layout, features, outcomes, target)
    if orphans:
        say(f"{orphans:,} outcomes of shipments not in validated/: not trained on")
    data = labelled(features, outcomes, target)
    split = time_split(data, until=until)
    rows = {"train": split.train.height, "valid": split.valid.height, "test": split.test.height}
    # the positives for the target per window (the model card states them beside the rows)
    positives = {
        "train": int(split.train[LABEL].sum()),
        "valid": int(split.valid[LABEL].sum()),
        "test": int(split.test[LABEL].sum()),
    }
    say(f"training on {rows['train']:,} inspected shipments")
    meta = _feature_set(layout)
    columns, categorical = training_columns(
        data,
        tuple(meta.get("extras", {}).get("categorical", {})),
        tuple(meta.get("unavailable", {})),
    )
    # the rule that chooses the number of trees (UAT2 DS F19): average precision on
    # the validation window, or its log-loss when that window holds no positive
    trained = fit(split, config, columns, categorical, target=target.value)
    if trained.stopping.note:
        say(f"warning: {trained.stopping.note}")
    # the feature set with the export's own columns, and their code tables, kept
    # with the model: serving codes the extras a declaration brings with these
    fs_version = feature_set_version(meta.get("extras"))
    reg = registry(layout)
    windows = split.windows()
    with reg.run(f"train-{target.value}") as run:
        import mlflow

        say("evaluating on the test window")
        staging = layout.reports / "evaluation" / f"run-{run.info.run_id}"
        ev, report = _evaluate_on(layout, trained.booster, None, split.test, features, staging)
        params = {
            **config.as_dict(),
            "target": target.value,
            "feature_set_version": fs_version,
            # the rows split (after --until), not everything labelled
            "data_hash": data_hash(pl.concat([split.train, split.valid, split.test])),
            "code_version": code_version(),
            "best_iteration": trained.best_iteration,
            "early_stopping_metric": trained.stopping.metric,
            **(
                {"early_stopping_note": trained.stopping.note[:5000]}
                if trained.stopping.note
                else {}
            ),
            **{f"{k}_window": f"{v[0]}|{v[1]}" for k, v in windows.items()},
            **{f"rows_{k}": v for k, v in rows.items()},
            "outcomes_without_shipment": orphans,
            "positives_without_shipment": orphan_positives,
        }
        mlflow.log_params(params)
        mlflow.log_metrics(_flat_metrics(ev))
        mlflow.log_dict(meta.get("extras") or {}, EXTRAS_ARTIFACT)
        say("registering the model")
        tags = {
            "target": target.value,
            "feature_set_version": fs_version,
            "test_from": str(windows["test"][0]),
            "test_to": str(windows["test"][1]),
            "data_hash": params["data_hash"],
            "code_version": params["code_version"],
            **model_extras_tag(meta.get("extras")),
        }
        version = reg.log_model(trained.booster, tags)
        ev.model_version = version
        card = model_card(
            version=version,
            target=target.value,
            windows=windows,
            rows=rows,
            positives=positives,
            params={**config.params(), "metric": trained.stopping.metric},
            feature_set=fs_version,
            data_hash=params["data_hash"],
            code_version=params["code_version"],
            metrics=ev.to_json(),
            best_iteration=trained.best_iteration,
            inputs=trained.feature_names,
            unavailable=dict(meta.get("unavailable", {})),
            early_stopping=trained.stopping.as_dict(),
        )
        card["outcomes_not_trained_on"] = {
            "without_validated_shipment": orphans,
            "positive": orphan_positives,
        }
        final = layout.reports / "evaluation" / f"v{version}"
        if final.exists():
            import shutil

            shutil.rmtree(final)
        staging.rename(final)
        report = write_report(ev, final, _images(final), _captions(final))
        (final / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
        (final / "model_card.md").write_text(card_markdown(card))
        mlflow.log_artifacts(str(final), artifact_path="evaluation")
    reg.set_alias(CHALLENGER, version)
    return TrainRun(
        version,
        ev,
        report,
        trained.best_iteration,
        rows,
        orphans,
        orphan_positives,
        trained.stopping.as_dict(),
    )


DISPARITY_CAPACITY = 0.05


def _images(folder: Path) -> dict[str, str]:
    names = {
        "capacity.png": "Precision and recall against capacity",
        "calibration.png": "Reliability",
        "scores.png": "Score distribution",
        "typologies.png": "Per-typology true recall",
        "shap_beeswarm.png": "SHAP beeswarm",
        "disparity.png": "Selection rate by office and origin at 5% capacity",
    }
    return {t: f for f, t in names.items() if (folder / f).exists()}


CAPTIONS = "figures.json"  # reports/evaluation/vN/figures.json: each plot's text on the page


def _captions(folder: Path) -> dict[str, str]:
    path = folder / CAPTIONS
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _flat_metrics(ev: Evaluation) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("pr_auc", "pr_auc_random_share", "brier"):
        value = getattr(ev, key)
        if value == value:  # not NaN
            out[key] = float(value)
    for cap, m in ev.at_capacity.items():
        for k, v in m.items():
            if isinstance(v, float):
                out[f"{k}_at_{cap.rstrip('%')}pct"] = v
    return out


def run_evaluate(
    layout: DataLayout, ref: str, *, window_of: str | None = None, say: Say | None = None
) -> tuple[Evaluation, Path]:
    """Evaluate version `ref` (number or alias) on its own test window, or on the
    test window of version `window_of` (to compare two versions side by side)."""
    say = say or (lambda _m: None)
    say(f"evaluating version {ref}")
    # (assess_version reads features/ with the version's own code tables of extras)
    a, mv = assess_version(layout, ref, window_of=window_of, baseline=rules_baseline(layout))
    folder = (
        layout.reports
        / "evaluation"
        / (f"v{mv.version}" if not window_of else f"v{mv.version}-on-v{window_of}")
    )
    return a.evaluation, _write_report(a, folder)


def run_promote(
    layout: DataLayout,
    version: str,
    *,
    who: str,
    reason: str | None,
    force: bool = False,
) -> Promotion:
    """Promote without recording in the operational database (see `caravan promote`,
    which records and audits it there too)."""
    return promote(
        layout, version, who=who, reason=reason, force=force, baseline=rules_baseline(layout)
    )


class UnknownModelError(LookupError):
    """No registered model version with that number or alias."""


def _load_model(layout: DataLayout, ref: str) -> tuple[Any, Any]:
    if not layout.mlflow_db.exists():  # nothing trained here (and do not create the store)
        raise UnknownModelError(f"no registered model version or alias {ref!r}: nothing trained")
    reg = registry(layout)
    try:
        reg.version(ref)
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnknownModelError(
            f"no registered model version or alias {ref!r} ({detail})"
        ) from None
    return reg.load(ref)


SCORE_RUNS = "runs"  # scores/runs/RUN/: every batch run, kept
LATEST_SCORES = "scores.parquet"  # scores/scores.parquet: a copy of the latest run's
LATEST_VECTORS = "feature_vectors.parquet"
MANIFEST = "manifest.json"


class NothingToScoreError(LookupError):
    """No shipment to score (e.g. none declared since `--since`): nothing is written."""


@dataclass(frozen=True)
class ScoreRun:
    """One batch run of `caravan score`: its folder under scores/runs/ and manifest."""

    run: str
    folder: Path
    scores: pl.DataFrame
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _new_run_folder(layout: DataLayout, label: str, at: dt.datetime) -> tuple[str, Path]:
    """scores/runs/<UTC time>-<label> (label: v<model version>), unique (a suffix when
    two runs share a second)."""
    base = f"{at:%Y%m%dT%H%M%SZ}-{label}"
    runs = layout.scores / SCORE_RUNS
    runs.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        try:
            (runs / name).mkdir()
        except FileExistsError:
            continue
        return name, runs / name
    raise RuntimeError(f"cannot create a run folder under {runs}")


def _keep_earlier_scores(layout: DataLayout) -> str | None:
    """A scores/scores.parquet written before runs were kept (no `score_run` column) is
    moved, with its feature vectors, into a run folder of its own (named by its file
    time and model versions), so that the first kept run does not replace it."""
    path = layout.scores / LATEST_SCORES
    if not path.exists() or "score_run" in pl.read_parquet_schema(path):
        return None
    versions = pl.scan_parquet(path).select("model_version").unique().collect()
    found = sorted(str(x) for x in versions["model_version"])
    label = "-".join(f"v{v}" for v in found)
    at = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    run, folder = _new_run_folder(layout, label or "unknown", at)
    rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    files = {}
    for name in (LATEST_SCORES, LATEST_VECTORS):
        if (layout.scores / name).exists():
            (layout.scores / name).rename(folder / name)
            files[f"{SCORE_RUNS}/{run}/{name}"] = _sha256(folder / name)
    manifest = {
        "run": run,
        "at": at.isoformat(timespec="seconds"),
        "model_version": ",".join(found) or None,
        "rows": int(rows),
        "files": files,
        "note": "scores/ as found before batch runs were kept (time: the file's)",
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return run


def run_score(
    layout: DataLayout,
    ref: str = CHAMPION,
    *,
    since: dt.datetime | None = None,
    say: Say | None = None,
) -> ScoreRun:
    """Score validated shipments into a new run folder scores/runs/RUN/ (scores,
    feature vectors, manifest with counts and file hashes), never overwriting an
    earlier run; scores/scores.parquet and scores/feature_vectors.parquet are then
    replaced by copies of this run's (the latest view). Raises NothingToScoreError,
    writing nothing, when no shipment is to be scored."""
    say = say or (lambda _m: None)
    booster, mv = _load_model(layout, ref)
    # the version's own code tables of categorical extras, not features/'s
    features = with_model_codes(layout, read_features(layout), mv)
    if since is not None:
        features = features.filter(pl.col("declared_at") >= since)
    if features.height == 0:
        raise NothingToScoreError(
            f"no shipment declared since {since:%Y-%m-%d %H:%M}: nothing scored"
            if since is not None
            else "no shipment in features/: nothing scored"
        )
    at = dt.datetime.now(dt.UTC)
    names = list(booster.feature_name())
    x = matrix(features, names)
    say(f"scoring {features.height:,} shipments with version {mv.version}")
    prob = predict(booster, x)
    scores = features.select("shipment_id", "declared_at").with_columns(
        pl.Series("probability", prob),
        pl.lit(mv.version).alias("model_version"),
        pl.lit(feature_set_version()).alias("feature_set_version"),
        features.select(names).hash_rows(seed=0).cast(pl.String).alias("feature_vector_ref"),
    )
    threshold = float(np.quantile(prob, 1 - EXPLAIN_SHARE)) if len(prob) else 1.0
    explain = prob >= threshold
    say(f"explaining the riskiest {int(explain.sum()):,} shipments")
    rows = explain_frame(
        booster, features.filter(pl.Series(explain)), x[explain], names, list(CONTEXT)
    )
    by_id = {r["shipment_id"]: json.dumps(r["reasons"], ensure_ascii=False) for r in rows}
    _keep_earlier_scores(layout)
    run, folder = _new_run_folder(layout, f"v{mv.version}", at)
    scores = scores.with_columns(
        pl.col("shipment_id")
        .replace_strict(by_id, default=None, return_dtype=pl.String)
        .alias("explanation"),
        pl.lit(run).alias("score_run"),
    )
    vectors = features.select("shipment_id", *names).with_columns(scores["feature_vector_ref"])
    write_parquet(scores, folder / LATEST_SCORES)
    write_parquet(vectors, folder / LATEST_VECTORS)
    manifest: dict[str, Any] = {
        "run": run,
        "at": at.isoformat(timespec="seconds"),
        "model_version": mv.version,
        "feature_set_version": feature_set_version(),
        "since": since.isoformat() if since is not None else None,
        "rows": scores.height,
        "explained": len(by_id),
        "files": {
            f"{SCORE_RUNS}/{run}/{name}": _sha256(folder / name)
            for name in (LATEST_SCORES, LATEST_VECTORS)
        },
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    # the latest view, for readers of scores/scores.parquet (each file replaced whole)
    write_parquet(scores, layout.scores / LATEST_SCORES)
    write_parquet(vectors, layout.scores / LATEST_VECTORS)
    return ScoreRun(run, folder, scores, manifest)


@dataclass(frozen=True)
class BatchScore:
    """A shipment's score in a batch run, with its stored feature vector."""

    source: str  # the scores file it was read from, relative to the data directory
    run: str | None  # the run folder (None for a scores/scores.parquet from before runs)
    model_version: str
    probability: float
    feature_vector_ref: str
    vector: dict[str, float | None] | None  # None when the vector is not stored
    vector_matches_ref: bool


def batch_scores(layout: DataLayout, shipment_id: str) -> list[BatchScore]:
    """Every batch score of a shipment, oldest run first: the kept runs under
    scores/runs/, or, in a data directory scored before runs were kept, the single
    scores/scores.parquet with its feature_vectors.parquet."""
    runs = layout.scores / SCORE_RUNS
    folders = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    pairs: list[tuple[Path, Path, str | None]] = [
        (f / LATEST_SCORES, f / LATEST_VECTORS, f.name) for f in folders
    ]
    if not pairs:
        pairs = [(layout.scores / LATEST_SCORES, layout.scores / LATEST_VECTORS, None)]
    found: list[BatchScore] = []
    for scores_path, vectors_path, run in pairs:
        if not scores_path.exists():
            continue
        rows = (
            pl.scan_parquet(scores_path)
            .filter(pl.col("shipment_id") == shipment_id)
            .select("model_version", "probability", "feature_vector_ref")
            .collect()
        )
        vectors = (
            pl.scan_parquet(vectors_path).filter(pl.col("shipment_id") == shipment_id).collect()
            if vectors_path.exists()
            else pl.DataFrame()
        )
        for row in rows.iter_rows(named=True):
            ref = str(row["feature_vector_ref"])
            match = (
                vectors.filter(pl.col("feature_vector_ref") == ref) if vectors.height else vectors
            )
            vector, same = None, False
            if match.height:
                values = match.head(1).drop("shipment_id", "feature_vector_ref")
                vector = values.to_dicts()[0]
                same = str(values.hash_rows(seed=0).cast(pl.String)[0]) == ref
            found.append(
                BatchScore(
                    source=str(scores_path.relative_to(layout.root)),
                    run=run,
                    model_version=str(row["model_version"]),
                    probability=float(row["probability"]),
                    feature_vector_ref=ref,
                    vector=vector,
                    vector_matches_ref=same,
                )
            )
    return found


__all__ = [
    "BatchScore",
    "NothingToScoreError",
    "Promotion",
    "PromotionRefusedError",
    "ScoreRun",
    "Split",
    "UnknownModelError",
    "batch_scores",
    "read_features",
    "read_outcomes",
    "run_evaluate",
    "run_promote",
    "run_score",
    "run_train",
]
