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


def test_pca_training_mse_is_the_sum_of_the_discarded_eigenvalues_and_survives_save_load(mnist_test, tmp_path):
    """Closed form: on its own training data, PCA's mean squared error per pixel is the sum of the covariance's
    discarded eigenvalues (population covariance) divided by the number of pixels; a saved and reloaded
    codec gives exactly the same reconstructions."""
    from aelab.metrics import reconstruction_scores

    x = to_float(mnist_test.images[:2000])
    flat = x.reshape(len(x), -1).double().numpy()
    evals = np.sort(np.linalg.eigvalsh(np.cov(flat, rowvar=False, bias=True)))[::-1]
    for d in (2, 8, 32):
        pca = PCA(d).fit(x)
        expected = evals[d:].sum() / flat.shape[1]
        assert abs(reconstruction_scores(pca, x)["mse"] - expected) < 2e-6
        pca.save(tmp_path / f"pca{d}.safetensors")
        again = PCA.load(tmp_path / f"pca{d}.safetensors")
        assert torch.equal(again.decode(again.encode(x[:50])), pca.decode(pca.encode(x[:50])))
