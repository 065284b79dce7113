"""PCA, the lecture's linear autoencoder, behind the same encode/decode interface as the networks.

With f and g linear, the optimum of the quadratic loss is PCA (Bourlard & Kamp, 1988): f(x) = W^T (x - m)
and g(z) = W z + m with W the top-d principal directions.  scikit-learn does the fitting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA as SkPCA

from aelab.io import atomic_save


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
        sk = SkPCA(n_components=self.d, svd_solver="covariance_eigh", random_state=self.seed).fit(_flat(x))
        self.mean_, self.components_ = sk.mean_, sk.components_       # (D,), (d, D)
        self.image_shape_ = tuple(x.shape[1:])
        return self

    @property
    def latent_dim(self) -> int:
        return self.d

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = W^T (x - m): (N, C, H, W) -> (N, d)."""
        return torch.from_numpy(((_flat(x) - self.mean_) @ self.components_.T).astype(np.float32))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """g(z) = W z + m: (N, d) -> (N, C, H, W)."""
        x = (np.asarray(z, dtype=np.float64) @ self.components_ + self.mean_).astype(np.float32)
        return torch.from_numpy(x).view(len(x), *self.image_shape_)

    def truncate(self, d: int) -> PCA:
        """The same PCA keeping only its top d directions (components are sorted by explained variance)."""
        if not 1 <= d <= self.d:
            raise ValueError(f"truncate to d = {d}: this PCA has {self.d} components")
        out = PCA(d, self.seed)
        out.mean_, out.components_, out.image_shape_ = self.mean_, self.components_[:d], self.image_shape_
        return out

    def save(self, path: str | Path) -> None:
        """The fitted mean and components as safetensors (float64), atomically."""
        from safetensors.numpy import save_file

        arrays = {"mean": np.ascontiguousarray(self.mean_), "components": np.ascontiguousarray(self.components_),
                  "image_shape": np.asarray(self.image_shape_, np.int64)}
        atomic_save(path, lambda tmp: save_file(arrays, str(tmp)))

    @classmethod
    def load(cls, path: str | Path) -> PCA:
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
        pca = cls(int(arrays["components"].shape[0]))
        pca.mean_, pca.components_ = arrays["mean"], arrays["components"]
        pca.image_shape_ = tuple(int(v) for v in arrays["image_shape"])
        return pca


def _flat(x: torch.Tensor) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)
