"""The model registry: MLflow with its SQLite store inside the data directory.

Versions carry the aliases `champion` (serving) and `challenger` (newest
trained); stages are deprecated in MLflow and not used. Serving loads the
native LightGBM booster, not the pyfunc wrapper. Nothing here runs at import.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb

MODEL_NAME = "caravan-risk"
EXPERIMENT = "caravan-training"
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ModelVersion:
    version: str
    run_id: str
    aliases: list[str]
    tags: dict[str, str]


class Registry:
    def __init__(self, db_path: Path, artifacts: Path) -> None:
        self.uri = f"sqlite:///{db_path.resolve()}"
        self.artifacts = artifacts.resolve()

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _experiment_id(self) -> str:
        """The training experiment whose artifacts go to this data directory's folder.

        MLflow records absolute artifact locations. When the data directory has been
        moved or restored elsewhere, the experiment still names the old folder, and new
        runs would write there (or fail): it is renamed, with its old location in the
        name, and a new experiment of the usual name writes here. Its runs stay
        readable (see `_here`)."""
        client = self.client()
        here = self.artifacts.as_uri()
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is not None and exp.artifact_location == here:
            return str(exp.experiment_id)
        if exp is not None:
            client.rename_experiment(
                exp.experiment_id,
                f"{EXPERIMENT} {exp.experiment_id} (recorded at {exp.artifact_location})",
            )
        self.artifacts.mkdir(parents=True, exist_ok=True)
        return str(client.create_experiment(EXPERIMENT, artifact_location=here))

    def _here(self, uri: str) -> str:
        """A recorded artifact URI as a location in this data directory's folder.

        Every experiment of the store keeps its artifacts in the data directory's
        artifact folder; a location recorded under an experiment's root from before a
        move (MLflow keeps absolute paths, mlflow/mlflow#3144) is read from the same
        place under the folder the directory has now, never from the old path, which
        may be gone or belong to another copy."""
        from mlflow.entities import ViewType

        here = self.artifacts.as_uri()
        if uri == here or uri.startswith(here + "/"):
            return uri
        roots = {
            e.artifact_location.rstrip("/")
            for e in self.client().search_experiments(view_type=ViewType.ALL)
            if e.artifact_location
        }
        for root in sorted(roots, key=len, reverse=True):
            if uri == root or uri.startswith(root + "/"):
                return here + uri[len(root) :]
        return uri

    @contextmanager
    def run(self, name: str) -> Iterator[Any]:
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        with mlflow.start_run(experiment_id=self._experiment_id(), run_name=name) as run:
            yield run

    def log_model(self, booster: lgb.Booster, tags: dict[str, str]) -> str:
        """Log the booster in the active run, register it, tag it; return its version."""
        import mlflow

        info = mlflow.lightgbm.log_model(booster, name="model", registered_model_name=MODEL_NAME)
        version = str(info.registered_model_version)
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(MODEL_NAME, version, key, value)
        return version

    def set_alias(self, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(MODEL_NAME, alias, version)

    def version(self, ref: str) -> ModelVersion:
        """A version by number or alias."""
        client = self.client()
        mv = (
            client.get_model_version(MODEL_NAME, ref)
            if ref.isdigit()
            else client.get_model_version_by_alias(MODEL_NAME, ref)
        )
        return ModelVersion(str(mv.version), str(mv.run_id), list(mv.aliases), dict(mv.tags))

    def has_alias(self, alias: str) -> bool:
        try:
            self.version(alias)
        except Exception:
            return False
        return True

    def versions(self) -> list[ModelVersion]:
        client = self.client()
        found = client.search_model_versions(f"name='{MODEL_NAME}'")
        return sorted(
            (
                ModelVersion(str(m.version), str(m.run_id), list(m.aliases), dict(m.tags))
                for m in found
            ),
            key=lambda m: int(m.version),
        )

    def load(self, ref: str) -> tuple[lgb.Booster, ModelVersion]:
        """The native LightGBM booster of a version (number or alias)."""
        import mlflow

        mv = self.version(ref)
        stored = self.client().get_model_version_download_uri(MODEL_NAME, mv.version)
        booster = mlflow.lightgbm.load_model(self._here(stored))
        return booster, mv

    def artifact_json(self, run_id: str, path: str) -> dict[str, Any]:
        import mlflow

        root = self._here(self.client().get_run(run_id).info.artifact_uri)
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{path}", dst_path=tmp)
            return dict(json.loads(Path(local).read_text()))
