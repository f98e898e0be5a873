"""Settings, read in one place and passed down; the data directory's layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deployment settings from the environment (prefix CARAVAN_)."""

    model_config = SettingsConfigDict(env_prefix="CARAVAN_", extra="ignore")

    data: Path = Path("./caravan-data")
    database_url: str | None = None


@dataclass(frozen=True)
class DataLayout:
    """Where everything of one deployment lives, under one directory."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def validated(self) -> Path:
        return self.root / "validated"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def database(self) -> Path:
        return self.root / "caravan.db"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlflow-artifacts"

    def make_dirs(self) -> None:
        for path in (
            self.raw,
            self.validated,
            self.quarantine,
            self.truth,
            self.features,
            self.scores,
            self.reports,
        ):
            path.mkdir(parents=True, exist_ok=True)
