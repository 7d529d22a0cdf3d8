"""Conveniences of the tests around the predictor's and the trainer's own functions."""

from __future__ import annotations

import pickle

from streamwise_core.contracts.appspec import AppSpec
from streamwise_core.contracts.schema import to_model_input, validator
from streamwise_predictor.holder import ServedModel
from streamwise_predictor.predictions import Checked, Instance, Prediction, predict_checked
from streamwise_trainer.learning import TrainerState


def predict_instances(spec: AppSpec, served: ServedModel, instances: list[Instance]) -> list[Prediction]:
    """Predictions of one model version for all ``instances``, through the predictor's own steps."""
    read_input = validator(spec).model_input
    checked = [Checked(i.id, read_input(i.features) or to_model_input(spec, i.features)) for i in instances]
    return [Prediction(**answer) for answer in predict_checked(spec, served, checked)]


def checkpoint_size(state: TrainerState) -> int:
    return len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
