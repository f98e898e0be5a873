"""The command line's training defaults are the library's: one place decides them."""

from __future__ import annotations

import inspect

from models.train import TrainConfig
from pipelines.cli import train


def test_train_command_defaults_to_the_train_config() -> None:
    default = inspect.signature(train).parameters["max_depth"].default
    assert default == TrainConfig().max_depth
