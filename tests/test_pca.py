"""PCA codec against scikit-learn directly and against the closed form (eigenvectors of the covariance)."""

import numpy as np
import torch
from sklearn.decomposition import PCA as SkPCA

from aelab.data import to_float
from aelab.pca import PCA


def test_pca_matches_sklearn_and_the_eigendecomposition(mnist_test):
    x = to_float(mnist_test.images[:3000])
    flat = x.reshape(len(x), -1).double().numpy()
    d = 16
    ours = PCA(d).fit(x)
    z, x_hat = ours.encode(x[:100]), ours.decode(ours.encode(x[:100]))
    assert z.shape == (100, d) and x_hat.shape == (100, 1, 28, 28) and x_hat.dtype == torch.float32

    sk = SkPCA(d, svd_solver="full").fit(flat)
    np.testing.assert_allclose(np.abs(z.numpy()), np.abs(sk.transform(flat[:100])), atol=2e-4)
    np.testing.assert_allclose(x_hat.reshape(100, -1).numpy(), sk.inverse_transform(sk.transform(flat[:100])),
                               atol=2e-5)

    # closed form: projection onto the top-d eigenvectors of the covariance
    mean = flat.mean(0)
    evals, evecs = np.linalg.eigh(np.cov(flat - mean, rowvar=False))
    top = evecs[:, np.argsort(evals)[::-1][:d]]
    proj = (flat[:100] - mean) @ top @ top.T + mean
    np.testing.assert_allclose(x_hat.reshape(100, -1).numpy(), proj, atol=2e-5)


def test_pca_error_falls_with_d(mnist_test):
    x = to_float(mnist_test.images[:2000])
    errs = [float((PCA(d).fit(x).decode(PCA(d).fit(x).encode(x)) - x).pow(2).mean()) for d in (2, 8, 32)]
    assert errs[0] > errs[1] > errs[2]
