"""AdaLoss weights against a hand computation."""

from __future__ import annotations

import pytest
import torch

from timm_anytime.adaloss import AdaLoss


def test_weights_follow_the_inverse_moving_average_by_hand() -> None:
    ada = AdaLoss(2, momentum=0.5)
    a, b = torch.tensor(4.0, requires_grad=True), torch.tensor(1.0, requires_grad=True)
    total = ada([a, b])  # averages (4, 1): weights (1/4, 1) / 1.25 = (0.2, 0.8)
    torch.testing.assert_close(ada.weights, torch.tensor([0.2, 0.8]))
    total.backward()
    assert a.grad.item() == pytest.approx(0.2)  # the weights are constants
    assert b.grad.item() == pytest.approx(0.8)
    ada([torch.tensor(2.0), torch.tensor(3.0)])  # averages (3, 2): weights (1/3, 1/2) / (5/6)
    torch.testing.assert_close(ada.weights, torch.tensor([0.4, 0.6]))


def test_state_round_trip_and_errors() -> None:
    ada = AdaLoss(2, momentum=0.9)
    ada([torch.tensor(1.0), torch.tensor(2.0)])
    resumed = AdaLoss(2)
    resumed.load_state_dict(ada.state_dict())
    losses = [torch.tensor(3.0), torch.tensor(0.5)]
    ada(losses)
    resumed(losses)
    torch.testing.assert_close(resumed.weights, ada.weights)
    with pytest.raises(ValueError, match="built for 2 exits"):
        ada([torch.tensor(1.0)])
    with pytest.raises(FloatingPointError, match="non-finite"):
        ada([torch.tensor(float("nan")), torch.tensor(1.0)])
