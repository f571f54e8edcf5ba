"""timm_anytime.train.loaders.first_training_batches: the trainer's first N batches across epochs."""

from __future__ import annotations

import pytest

from timm_anytime.train.loaders import first_training_batches


class EpochLoader:
    """A stand-in for ``Loaders.train``: ``size`` batches per epoch, each named (epoch, index)."""

    def __init__(self, size: int) -> None:
        self.size, self.epoch, self.epochs_set = size, None, []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_set.append(epoch)

    def __iter__(self):
        return iter([(self.epoch, i) for i in range(self.size)])


def test_takes_count_batches_across_epochs_setting_each_epoch() -> None:
    loader = EpochLoader(3)
    assert list(first_training_batches(loader, 7)) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert loader.epochs_set == [0, 1, 2]


def test_an_empty_loader_is_an_error_not_a_hang() -> None:
    with pytest.raises(ValueError, match="yields no batches"):
        list(first_training_batches(EpochLoader(0), 1))
