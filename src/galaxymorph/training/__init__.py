"""Training: the loop, the data split and the decoded image cache."""

from galaxymorph.training.train import TrainConfig, train

__all__ = ["TrainConfig", "train"]
