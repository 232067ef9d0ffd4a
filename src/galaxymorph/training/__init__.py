"""Training: the loop, the data split and the decoded image cache, and ensembles of trained models."""

from galaxymorph.training.ensemble import combine_checkpoints
from galaxymorph.training.train import TrainConfig, train

__all__ = ["TrainConfig", "combine_checkpoints", "train"]
