"""A small CNN classifier for 28x28 grey images, used as the feature extractor of the FD metric.

Not a diffusion network (no timestep): `forward(x) -> logits`, `features(x) -> penultimate
features`. Inputs are in model space [-1, 1] (`data.to_model_space`), like every network here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ClassifierConfig:
    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 10
    channels: tuple[int, ...] = (16, 32, 64)  # one stage of two convs per entry, each then 2x2 max-pooled
    feature_dim: int = 128  # width of the penultimate layer, i.e. of the FD features
    dropout: float = 0.3  # before the last linear layer


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions with BatchNorm and ReLU, then 2x2 max-pooling (halves the size, floor)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class FeatureClassifier(nn.Module):
    """conv stages -> global average pool -> linear + BatchNorm + ReLU (features) -> dropout -> linear."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        widths = (config.in_channels, *config.channels)
        self.stages = nn.Sequential(*(conv_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)))
        self.embed = nn.Sequential(
            nn.Linear(widths[-1], config.feature_dim, bias=False),
            nn.BatchNorm1d(config.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] in [-1, 1] -> penultimate features [B, feature_dim] (non-negative, after ReLU)."""
        h = self.stages(x).mean(dim=(2, 3))
        return self.embed(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))
