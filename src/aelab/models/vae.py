"""A variational autoencoder on the lecture's convolutional architecture (Kingma & Welling, 2014).

The encoder is the lecture's, with its last layer giving 2d channels: the mean m(x) and log-variance
log s^2(x) of q(z | x) = N(m, diag s^2).  The decoder is the lecture's mirror and gives Bernoulli logits.
Training minimises the negative ELBO  E_q[-log p(x | z)] + beta KL(q(z | x) || N(0, I))  per image;
beta = 1 is the VAE, beta != 1 the beta-VAE (Higgins et al., 2017).

encode(x) -> m(x): (N, D); decode(z) -> sigmoid(logits): (N, C, H, W); sampling needs only z ~ N(0, I).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from aelab.models.autoencoder import LECTURE_SPEC, AutoEncoder, ConvSpec


class VAE(nn.Module):
    def __init__(self, d: int = 8, spec: Sequence[ConvSpec] = LECTURE_SPEC, in_channels: int = 1,
                 image_size: int | tuple[int, int] = 28, beta: float = 1.0, decoder: str = "transposed"):
        super().__init__()
        ae = AutoEncoder(d, spec, in_channels, image_size, decoder)
        last = ae.encoder[-1]
        ae.encoder[-1] = nn.Conv2d(last.in_channels, 2 * d, last.kernel_size, last.stride, last.padding)
        self.encoder, self.decoder = ae.encoder, ae.decoder
        self.spec, self.latent_shape, self.d, self.beta = ae.spec, ae.latent_shape, d, beta

    @property
    def latent_dim(self) -> int:
        return math.prod(self.latent_shape)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, C, H, W) -> mean, log-variance, each (N, D)."""
        h = self.encoder(x)  # (N, 2d, h, w)
        return h[:, : self.d].flatten(1), h[:, self.d:].flatten(1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.view(len(z), *self.latent_shape))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per image (nats), with the KL term weighted by beta."""
        mean, logvar = self.posterior(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()  # reparameterisation
        recon = F.binary_cross_entropy_with_logits(self.logits(z), x, reduction="sum")
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum()
        return (recon + self.beta * kl) / len(x)
