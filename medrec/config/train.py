"""The training step's whole config: :class:`TrainConfig`, the data plus the sections that train
(:class:`TrainingSections`, which a workflow recipe shares).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medrec.config.base import _Section
from medrec.config.data import DataConfig, SplitConfig
from medrec.config.model import ModelConfig
from medrec.config.operating_point import CalibrationConfig, ThresholdConfig
from medrec.config.training import TrainingConfig
from medrec.transforms import PreprocessConfig

# The reconstruction baseline's network (training.anomaly_method: reconstruction).
AUTOENCODER = "anomaly_autoencoder"


def check_unlabelled(task: str, unlabelled: str) -> None:
    """``data.unlabelled: normal`` belongs to anomaly detection.

    Raises:
        ValueError: ``normal`` with another task.
    """
    if unlabelled == "normal" and task != "anomaly":
        raise ValueError("data.unlabelled: normal (rows without a label assumed normal) is for task: anomaly "
                         "only; a classifier learns from labelled rows")


class TrainingSections(_Section):
    """The sections a training recipe and a workflow recipe share (everything but the data).

    Attributes:
        task: ``classification`` (learn the labelled classes) or ``anomaly`` (learn what normal
            studies look like from the negatives alone, with synthetic anomalies as the only
            positives; labelled positives are kept for validation and test; a finding-map model).
        split: how to split when no splits file is given.
        preprocessing: the preprocessing recipe (planned against the training data).
        model: the network.
        training: the loop.
        threshold: operating threshold choice (binary).
        calibration: probability calibration.
    """

    task: Literal["classification", "anomaly"] = "classification"
    split: SplitConfig = Field(default_factory=SplitConfig)
    preprocessing: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)

    @field_validator("threshold", "calibration", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        # ``calibration: none`` and ``threshold: youden`` are accepted as short forms.
        return {"method": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _anomaly_method_fits_the_model(self) -> TrainingSections:
        autoencoder = self.model.name.strip().lower() == AUTOENCODER
        if (self.training.anomaly_method == "reconstruction") != autoencoder:
            raise ValueError(
                f"training.anomaly_method reconstruction goes with model.name {AUTOENCODER} (and only it); got "
                f"anomaly_method {self.training.anomaly_method} with model {self.model.name}")
        if autoencoder and self.task != "anomaly":
            raise ValueError(f"model {AUTOENCODER} learns normal studies for task: anomaly only")
        return self

    @model_validator(mode="after")
    def _input_fits_budget(self) -> TrainingSections:
        size = self.preprocessing.input_size
        if size != "auto":
            batch_bytes = self.training.batch_size * math.prod(size) * 4
            if batch_bytes > self.training.memory_budget_gb * 1024**3:
                raise ValueError(
                    f"training.batch_size {self.training.batch_size} x preprocessing.input_size {list(size)} needs "
                    f"{batch_bytes / 1024**3:.2f} GiB per batch > training.memory_budget_gb "
                    f"{self.training.memory_budget_gb}; lower them or raise the budget"
                )
        return self


class TrainConfig(TrainingSections):
    """The whole training recipe: the data plus the shared sections of :class:`TrainingSections`.

    Attributes:
        data: manifest, splits and labels.
    """

    data: DataConfig

    @model_validator(mode="after")
    def _unlabelled_normal_for_anomaly(self) -> TrainConfig:
        check_unlabelled(self.task, self.data.unlabelled)
        return self

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (absolute paths, every default filled in), data first."""
        dumped = self.model_dump(mode="json")
        return {"data": dumped.pop("data"), **dumped}
