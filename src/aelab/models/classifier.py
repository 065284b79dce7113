"""The fixed classifier that judges reconstructions and samples ("class kept", FID in its feature space).

A plain LeNet-style CNN; ``aelab.evaluator`` trains it with a fixed recipe and ships the MNIST and
Fashion-MNIST weights with the package.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitClassifier(nn.Module):
    """x: (N, C, H, W) in [0, 1] -> logits (N, n_classes); ``features(x)`` -> (N, 128), the FID feature space.

    For 28x28 inputs the adaptive pooling is the identity (two 2x2 max-pools give 7x7); other sizes are
    pooled to 7x7, so one architecture serves any ``images`` folder.
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),   # 32x14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),            # 64x7x7
            nn.AdaptiveAvgPool2d(7),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(128, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
