"""The fixed MNIST classifier that judges reconstructions and samples ("digit kept", FID-MNIST).

A plain LeNet-style CNN; it is trained once by ``aelab.evaluate.mnist_classifier`` with a fixed seed.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitClassifier(nn.Module):
    """x: (N, 1, 28, 28) in [0, 1] -> logits (N, 10); ``features(x)`` -> (N, 128), the FID feature space."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),   # 32x14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 64x7x7
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(128, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
