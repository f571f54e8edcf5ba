"""Shared by the model tests: BatchNorm statistics that make eval mode more than the identity."""

import torch


def nontrivial_batchnorm(model: torch.nn.Module, bias: bool = True) -> torch.nn.Module:
    """Random running statistics and affine weights (and biases) in every BatchNorm, in eval mode."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                if bias:
                    module.bias.uniform_(-0.2, 0.2)
    return model.eval()
