"""Training: the loop, the data split and the decoded image cache, ensembles of trained models, and
self-supervised pre-training of an encoder."""

from galaxymorph.training.ensemble import combine_checkpoints
from galaxymorph.training.pretrain import PretrainConfig, pretrain
from galaxymorph.training.train import TrainConfig, train

__all__ = ["PretrainConfig", "TrainConfig", "combine_checkpoints", "pretrain", "train"]
