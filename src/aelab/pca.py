"""PCA, the lecture's linear autoencoder, behind the same encode/decode interface as the networks.

With f and g linear, the optimum of the quadratic loss is PCA (Bourlard & Kamp, 1988): f(x) = W^T (x - m)
and g(z) = W z + m with W the top-d principal directions.  scikit-learn does the fitting.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA as SkPCA


class PCA:
    """PCA codec.  fit(x) -> self; encode(x: (N, C, H, W)) -> z: (N, d); decode(z) -> x_hat: (N, C, H, W).

    Tensors in and out are torch float32 in the model's pixel scale ([0, 1]), like the autoencoders.
    """

    def __init__(self, d: int, seed: int = 0):
        self.d, self.seed = d, seed

    def fit(self, x: torch.Tensor) -> PCA:
        """x: (N, C, H, W) training images."""
        # An exact eigendecomposition of the 784x784 covariance: deterministic and fast for N >> H*W
        # (a randomized solver would make the baseline depend on the seed).
        self.pca_ = SkPCA(n_components=self.d, svd_solver="covariance_eigh", random_state=self.seed).fit(_flat(x))
        self.image_shape_ = tuple(x.shape[1:])
        return self

    @property
    def latent_dim(self) -> int:
        return self.d

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.pca_.transform(_flat(x)).astype(np.float32))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.pca_.inverse_transform(np.asarray(z, dtype=np.float64)).astype(np.float32)
        return torch.from_numpy(x).view(len(x), *self.image_shape_)


def _flat(x: torch.Tensor) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)
