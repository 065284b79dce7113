"""Latent space: interpolation (linearity of PCA), densities vs scipy/numpy, flow invertibility, sample
scores vs closed forms, the VAE's objective, and the study end to end."""


import json

import numpy as np
import pytest
import torch
from scipy import linalg, stats

from aelab.cli import main
from aelab.data import to_float
from aelab.errors import ConfigError
from aelab.latent import Flow, interpolate, make_density
from aelab.models import VAE
from aelab.pca import PCA
from aelab.quality import Reference, frechet_distance, sample_scores


def test_interpolation_is_linear_for_pca_and_hits_the_endpoints(mnist_test):
    x = to_float(mnist_test.images[:2000])
    pca = PCA(8).fit(x)
    grid = interpolate(pca, x[:3], x[3:6], steps=5)
    assert grid.shape == (3, 5, 1, 28, 28)
    ends = pca.decode(pca.encode(x[:6]))
    torch.testing.assert_close(grid[:, 0], ends[:3], atol=1e-5, rtol=0)
    torch.testing.assert_close(grid[:, -1], ends[3:6], atol=1e-5, rtol=0)
    # g is affine, so g((1-a) z0 + a z1) = (1-a) g(z0) + a g(z1): the midpoint is the mean image
    torch.testing.assert_close(grid[:, 2], 0.5 * (ends[:3] + ends[3:6]), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[-4.0, 0, 0], [4, 0, 0], [0, 5, 1]])
    z = np.concatenate([c + rng.normal(0, 0.5, (1500, 3)) for c in centres])
    zt = np.concatenate([c + rng.normal(0, 0.5, (500, 3)) for c in centres])
    return z, zt


def test_gaussians_match_scipy(clusters):
    z, zt = clusters
    diag, full = make_density("diag").fit(z), make_density("full").fit(z)
    np.testing.assert_allclose(diag.log_prob(zt), stats.multivariate_normal(z.mean(0), np.diag(z.var(0))).logpdf(zt),
                               rtol=1e-9)
    np.testing.assert_allclose(full.log_prob(zt), stats.multivariate_normal(z.mean(0), np.cov(z.T)).logpdf(zt),
                               rtol=1e-6)
    s = full.sample(20000, seed=1)
    np.testing.assert_allclose(np.cov(s.T), np.cov(z.T), atol=0.3)
    assert np.array_equal(full.sample(10, seed=3), full.sample(10, seed=3))


def test_gmm_finds_the_clusters_and_beats_one_gaussian(clusters):
    z, zt = clusters
    gmm = make_density("gmm", candidates=(1, 2, 3, 6)).fit(z)
    assert gmm.n_components_ == 3
    assert gmm.log_prob(zt).mean() > make_density("full").fit(z).log_prob(zt).mean() + 1
    s = gmm.sample(3000, seed=0)
    near = np.linalg.norm(s[:, None] - np.array([[-4.0, 0, 0], [4, 0, 0], [0, 5, 1]]), axis=2).min(1)
    assert (near < 2.5).mean() > 0.97  # samples stay near the clusters, not in the gaps between them


def test_gmm_refit_on_all_latents_starts_from_the_subset_fit(clusters):
    """The search on a 600-point subset; the refit on all 4500 points must reach what a cold EM fit reaches."""
    from sklearn.mixture import GaussianMixture

    z, zt = clusters
    gmm = make_density("gmm", candidates=(1, 2, 3, 6), subset=600).fit(z)
    cold = GaussianMixture(3, covariance_type="full", random_state=0, reg_covar=1e-5).fit(z)
    assert gmm.n_components_ == 3
    assert gmm.model_.means_init is not None  # started from the subset's mixture, not from k-means
    assert gmm.log_prob(zt).mean() == pytest.approx(cold.score(zt), abs=1e-3)
    np.testing.assert_allclose(np.sort(gmm.model_.means_[:, 0]), np.sort(cold.means_[:, 0]), atol=1e-2)


def test_gmm_refit_stops_after_refit_iter_iterations_as_scikit_learns_em_from_the_same_start(clusters):
    """Six components on three clusters: EM creeps, and a refit of 2 iterations stops short of the tolerance,
    silently (refit_converged_ says so), with scikit-learn's own EM of 2 iterations from the subset fit."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    z, _ = clusters
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gmm = make_density("gmm", candidates=(6,), subset=600, refit_iter=2).fit(z)
    assert gmm.n_components_ == 6 and gmm.model_.n_iter_ == 2 and not gmm.refit_converged_
    sub, _ = gmm.split(z)
    mix = dict(covariance_type="full", random_state=0, reg_covar=1e-5)
    start = GaussianMixture(6, max_iter=300, **mix).fit(sub.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        truth = GaussianMixture(6, max_iter=2, weights_init=start.weights_, means_init=start.means_,
                                precisions_init=start.precisions_, **mix).fit(z.astype(np.float32))
    np.testing.assert_allclose(gmm.model_.means_, truth.means_, rtol=1e-5, atol=1e-5)
    # given time, the same refit reaches the tolerance
    assert make_density("gmm", candidates=(6,), subset=600, refit_iter=300).fit(z).refit_converged_


def test_gmm_search_side_by_side_gives_sklearns_scores_and_leaves_the_blas_threads(clusters):
    """The candidates fitted two at a time on one BLAS thread each: every held-out log-likelihood and BIC is the
    one scikit-learn's own GaussianMixture gives for that candidate fitted alone on the subset (EM in float32,
    as the GMM runs it), scored on rows the fit never saw; the best held-out candidate is chosen; the process's
    BLAS threads are as they were."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    from aelab.latent import blas_threads

    z, _ = clusters
    with threadpool_limits(2, user_api="blas"):
        gmm = make_density("gmm", candidates=(1, 2, 3, 6), subset=1200).fit(z)
        assert blas_threads() == 2
    perm = np.random.default_rng(0).permutation(len(z))
    sub, held = z[perm[:1200]], z[perm[1200:1200 + len(z) // 5]]   # a fifth of the 4500 held out
    alone = {c: GaussianMixture(c, covariance_type="full", random_state=0, max_iter=300, reg_covar=1e-5)
             .fit(sub.astype(np.float32)) for c in (1, 2, 3, 6)}
    assert list(gmm.bic_) == list(gmm.held_out_loglik_) == [1, 2, 3, 6]
    for c, m in alone.items():  # float32 parameters scored in float64 there, in float32 here
        assert gmm.bic_[c] == pytest.approx(m.bic(sub), rel=1e-6)
        assert gmm.held_out_loglik_[c] == pytest.approx(m.score(held), rel=1e-6)
    assert gmm.n_components_ == max(alone, key=lambda c: alone[c].score(held)) == 3


def test_gmm_by_held_out_likelihood_generalises_where_bic_underfits():
    """Eight overlapping clusters in 16 dimensions, 1200 points: BIC, which charges each full covariance its
    136 parameters, picks fewer components than held-out likelihood does, and the held-out choice scores
    higher on fresh draws from the same clusters (the independent truth), refitted on all the points."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1.2, (8, 16))
    draw = lambda n: np.concatenate([c + rng.normal(0, 1.0, (n, 16)) for c in centres])  # noqa: E731
    z, fresh = draw(150), draw(500)
    gmm = make_density("gmm", candidates=(1, 2, 4, 8, 16)).fit(z)
    by_bic = min(gmm.bic_, key=gmm.bic_.get)
    assert by_bic < gmm.n_components_
    assert gmm.n_components_ == max(gmm.held_out_loglik_, key=gmm.held_out_loglik_.get)
    bic_model = GaussianMixture(by_bic, covariance_type="full", random_state=0, max_iter=300, reg_covar=1e-5).fit(z)
    assert gmm.log_prob(fresh).mean() > bic_model.score(fresh) + 0.1


def test_gmm_em_in_float32_reaches_the_float64_optimum_and_samples_in_float64(clusters):
    """EM on float32 latents ends where scikit-learn's float64 EM ends (test log-likelihood, means), and the
    mixture it keeps is float64 with symmetric covariances: float32's products leave a covariance asymmetric by
    more than numpy's tolerance (here about 1e-6 for latents of about 10), and sampling from it warned that it
    is not positive semi-definite."""
    import warnings

    from sklearn.mixture import GaussianMixture

    z, zt = clusters
    gmm = make_density("gmm", n_components=3).fit(z)
    exact = GaussianMixture(3, covariance_type="full", random_state=0, reg_covar=1e-5).fit(z)
    assert gmm.log_prob(zt).mean() == pytest.approx(exact.score(zt), abs=1e-4)
    np.testing.assert_allclose(np.sort(gmm.model_.means_[:, 0]), np.sort(exact.means_[:, 0]), atol=1e-3)

    wide = np.random.default_rng(0).normal(0, 10, (3000, 8)) * np.linspace(0.2, 1, 8)
    gmm = make_density("gmm", n_components=5).fit(wide)
    cov = gmm.model_.covariances_
    assert {getattr(gmm.model_, a).dtype for a in ("weights_", "means_", "covariances_", "precisions_cholesky_")} \
        == {np.dtype(np.float64)}
    assert np.array_equal(cov, cov.transpose(0, 2, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = gmm.sample(2000, seed=0)
    assert s.dtype == np.float64 and gmm.log_prob(s).dtype == np.float64


def test_gmm_redoes_in_float64_a_fit_float32_cannot_carry():
    """Large latents on a plane in 4-d (two coordinates the sum and difference of the others): their covariances
    are singular below float32's rounding, and scikit-learn's float32 EM refuses them; the GMM fits them in
    float64 and gives scikit-learn's float64 result."""
    from sklearn.mixture import GaussianMixture

    a = np.random.default_rng(0).normal(0, 1e3, (3000, 2))
    z = np.c_[a, a.sum(1), a[:, 0] - a[:, 1]] + 5e3
    mixture = lambda: GaussianMixture(3, covariance_type="full", random_state=0, reg_covar=1e-5)  # noqa: E731
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        mixture().fit(z.astype(np.float32))
    gmm = make_density("gmm", n_components=3).fit(z)
    assert gmm.log_prob(z).mean() == pytest.approx(mixture().fit(z).score(z), rel=1e-12)


def test_gmm_refuses_too_few_latents_to_choose_from():
    with pytest.raises(ConfigError, match="at least 5 training latents.*latent.gmm_components"):
        make_density("gmm").fit(np.zeros((4, 2)))
    assert make_density("gmm", n_components=1).fit(np.arange(8.0).reshape(4, 2)).n_components_ == 1


def test_flow_is_invertible_and_learns_the_clusters(clusters):
    z, zt = clusters
    flow = Flow(steps=600, seed=0).fit(z)
    u = torch.randn(50, 3, dtype=torch.float32)
    x = u
    for layer in reversed(flow.couplings_):
        x = layer.inverse(x)
    for layer in flow.couplings_:
        x, _ = layer(x)
    torch.testing.assert_close(x, u, atol=1e-4, rtol=1e-4)
    assert flow.log_prob(zt).mean() > make_density("full").fit(z).log_prob(zt).mean() + 1


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) \
        == pytest.approx(4 + 1)
    a = rng.normal(size=(6, 6))
    b = rng.normal(size=(6, 6))
    s1, s2 = a @ a.T, b @ b.T
    expected = np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(np.ones(6), s1, np.ones(6), s1) == pytest.approx(0, abs=1e-6)


def test_sample_scores_separate_digits_from_noise(judge, mnist_train, mnist_test, tmp_path):
    ref = Reference.build(judge, to_float(mnist_train.images[:5000]))
    # the reference stage saves the statistics once; what its readers load scores exactly as the built one
    ref.save(tmp_path / "reference.safetensors")
    loaded = Reference.load(judge, to_float(mnist_train.images[:5000]), tmp_path / "reference.safetensors")
    assert np.array_equal(loaded.mu, ref.mu) and np.array_equal(loaded.sigma, ref.sigma)
    assert torch.equal(loaded.train_flat, ref.train_flat)
    x = to_float(mnist_test.images[:300])
    assert sample_scores(loaded, x, n_nearest=50) == sample_scores(ref, x, n_nearest=50)
    real = sample_scores(ref, to_float(mnist_test.images[:2000]), n_nearest=200)
    noise = sample_scores(ref, torch.rand(2000, 1, 28, 28, generator=torch.Generator().manual_seed(0)),
                          n_nearest=200)
    assert real["fid"] < 0.1 * noise["fid"]
    assert real["confident"] > 0.9  # real digits are recognised ...
    # ... but so, with confidence, is uniform noise: the shipped classifier puts every noise image in one class.
    # "confident" alone cannot tell noise from digits; the spread of the labels does
    assert real["class_entropy"] > 3.2 > 0.5 > noise["class_entropy"]  # all ten digits (log2 10 = 3.32) vs one
    copies = sample_scores(ref, to_float(mnist_train.images[:200]), n_nearest=200)
    assert copies["nn_distance"] < 1e-4 < 1 < real["nn_distance"]  # memorised images sit on the training set


def test_nearest_distance_equals_float64_brute_force(mnist_train, mnist_test):
    """The float32 ranking + float64 check gives what one float64 cdist gives (scipy's), also where float32
    alone cannot tell images apart: copies of training images, and copies moved by 1e-4 (sub-1e-3 distances)."""
    from scipy.spatial.distance import cdist

    from aelab.quality import nearest_distance, ranking_inputs

    train = to_float(mnist_train.images[:3000])
    flat = train.flatten(1).double()
    rng = torch.Generator().manual_seed(0)
    near = (train[:50] + 1e-4 * torch.randn(50, 1, 28, 28, generator=rng)).clamp(0, 1)
    x = torch.cat([to_float(mnist_test.images[:300]), train[100:150], near, torch.rand(20, 1, 28, 28,
                                                                                    generator=rng)])
    truth = cdist(x.flatten(1).clamp(0, 1).double().numpy(), flat.numpy()).min(1)
    got = nearest_distance(x, flat, chunk=128)
    assert got.dtype == np.float64 and got.shape == (len(x),)
    assert np.allclose(got, truth, rtol=0, atol=1e-9)
    assert (got[300:350] == 0).all() and (got[350:400] < 1e-2).all()
    # the ranking's inputs made once (as a Reference keeps them) give the same distances, bit for bit
    assert np.array_equal(nearest_distance(x, flat, chunk=128, ranked=ranking_inputs(flat)), got)


def test_vae_objective():
    torch.manual_seed(0)
    vae = VAE(d=4)
    x = torch.rand(8, 1, 28, 28)
    mean, logvar = vae.posterior(x)
    assert mean.shape == logvar.shape == (8, 4) and torch.equal(vae.encode(x), mean)
    out = vae.decode(mean)
    assert out.min() >= 0 and out.max() <= 1
    # KL(N(m, s^2) || N(0, 1)) has the closed form 0.5 (s^2 + m^2 - 1 - log s^2) per dimension. Make the
    # posterior constant (m = 0.7, log s^2 = -0.4 for every x) and compare the two objectives with the same noise.
    last = vae.encoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.7] * 4 + [-0.4] * 4))

    def loss(beta):
        vae.beta = beta
        torch.manual_seed(1)
        return float(vae.loss(x).detach())

    kl = 0.5 * 4 * (np.exp(-0.4) + 0.7**2 - 1 + 0.4)
    assert loss(1.0) - loss(0.0) == pytest.approx(kl, rel=1e-4)
    assert loss(3.0) - loss(0.0) == pytest.approx(3 * kl, rel=1e-4)


def test_vae_learns_on_real_mnist(mnist_train, mnist_test):
    from aelab.config import lecture_train
    from aelab.train import fit

    torch.manual_seed(0)
    vae = VAE(d=8)
    x, xt = to_float(mnist_train.images[:1500]), to_float(mnist_test.images[:500])  # 0.45x on a Zen 1
    with torch.no_grad():
        before = float(vae.loss(xt))
    fit(vae, x, xt, lecture_train(epochs=2, batch_size=50), progress=False)
    vae.eval()
    with torch.no_grad():
        assert float(vae.loss(xt)) < 0.6 * before


def test_latent_study_end_to_end(tmp_path, judge, mnist_train, mnist_test):
    from aelab.config import DataConfig, LatentConfig, ModelConfig, lecture_train
    from aelab.experiments import fit_pcas, latent_study, train_model

    train, test = mnist_train.subset(1000), mnist_test.subset(500)
    data, tc = DataConfig("mnist", 1000, 500), lecture_train(epochs=1)
    ae, _ = train_model(ModelConfig(d=4), tc, data, train, test, tmp_path / "ae-d4", progress=False)
    vae, _ = train_model(ModelConfig("vae", 4), tc, data, train, test, tmp_path / "vae-d4", progress=False)
    cfg = LatentConfig(dims=(4,), vaes=("1@4",), n_samples=300, n_pairs=2, flow_steps=50)
    rows, figures = latent_study(cfg, {4: ae}, {(1.0, 4): vae}, fit_pcas([4], to_float(train.images)), train, test,
                                 judge, tmp_path, progress=False)
    assert [(r["model"], r["density"]) for r in rows] == [
        ("test images", "-"), ("AE", "diag"), ("AE", "full"), ("AE", "gmm"), ("AE", "flow"), ("VAE", "prior")]
    assert all(np.isfinite(r["fid"]) for r in rows)
    assert [r.get("codes") for r in rows[1:5]] == ["fp32"] * 4  # trained in fp32 (the lecture's recipe)
    for name in ("sampling-d4.png", "interpolation-ae-d4.png", "interpolation-pca-d4.png", "interpolation-vae-d4.png"):
        assert (tmp_path / "figures" / name).exists() and f"figures/{name}" in {f.file for f in figures}
    # the CLI reads a trained run back and samples from it
    assert main(["sample", "--run", str(tmp_path / "vae-d4"), "--density", "prior", "-n", "100",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert main(["interpolate", "--run", str(tmp_path / "ae-d4"), "--out", str(tmp_path / "i.png"),
                 "--pairs", "2"]) == 0
    assert (tmp_path / "s.png").exists() and (tmp_path / "i.png").exists()
    assert main(["latent", "--set", "latent.vaes=x@8"]) == 2


def test_codes_in_bf16_are_the_encoder_under_pytorchs_autocast(mnist_test):
    from aelab.latent import encode_all
    from aelab.models import AutoEncoder

    torch.manual_seed(0)
    ae, x = AutoEncoder(8).eval(), to_float(mnist_test.images[:300])
    with torch.no_grad():
        z32 = ae.encode(x).double().numpy()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z16 = ae.encode(x).double().numpy()
    got = encode_all(ae, x, batch_size=128, precision="bf16")
    # PyTorch's bf16 autocast of the same batches (oneDNN's blocking may differ with the batch: a few bf16 ulps)
    np.testing.assert_allclose(got, z16, rtol=0, atol=4 * 2.0 ** -8 * np.abs(z16).max())
    assert 0 < np.abs(got - z32).max() < 0.02 * np.abs(z32).max()  # bf16's rounding, not fp32's codes
    np.testing.assert_allclose(encode_all(ae, x, batch_size=128), z32, rtol=1e-5, atol=1e-6)
    pca = PCA(4).fit(x.flatten(1).double().numpy())  # not a network: its codes stay exact
    np.testing.assert_array_equal(encode_all(pca, x, precision="bf16"), encode_all(pca, x))


def test_codes_precision_follows_training_and_measurement(monkeypatch, mnist_test):
    from aelab import kernels
    from aelab.latent import codes_precision
    from aelab.models import AutoEncoder

    ae, x = AutoEncoder(8), to_float(mnist_test.images[:400])
    calls = []

    def ratio(ways, rounds):
        calls.append(rounds)
        for way in ways:  # both ways run: the fp32 encode and the bf16 one
            assert way().shape == (167, 8)
        return speedup

    monkeypatch.setattr(kernels, "median_ratio", ratio)
    speedup = 1.8
    assert codes_precision(ae, x, "fp32") == {"precision": "fp32", "speedup": None,
                                               "reason": "the model was trained in fp32"}
    assert calls == []  # an fp32 model is never measured
    got = codes_precision(ae, x, "bf16")
    assert (got["precision"], got["speedup"], calls) == ("bf16", 1.8, [7]) and "1.80x" in got["reason"]
    speedup = 1.1  # below recipe.BF16_MIN_SPEEDUP: not worth bf16's rounding
    assert codes_precision(ae, x, "bf16")["precision"] == "fp32"
    assert codes_precision(PCA(4).fit(x.flatten(1).double().numpy()), x, "bf16")["precision"] == "fp32"


def test_every_command_takes_any_decoder(tmp_path):
    run = tmp_path / "ps"
    assert main(["train", "--preset", "lecture", "--dataset", "synthetic", "--d", "4", "--decoder", "pixel-shuffle",
                 "--epochs", "1", "--n-train", "200", "--out", str(run), "--quiet"]) == 0
    assert json.loads((run / "run.json").read_text())["config"]["model"]["decoder"] == "pixel-shuffle"
    # a trained run is read back with its own decoder
    assert main(["interpolate", "--run", str(run), "--out", str(tmp_path / "i.png"), "--pairs", "2"]) == 0
    assert main(["sample", "--run", str(run), "--density", "gmm", "-n", "50", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "i.png").exists() and (tmp_path / "s.png").exists()
    # the studies take the architecture as shortcuts (they set d themselves); a wrong family is refused
    for cmd in ("sweep", "latent"):
        assert main([cmd, "--decoder", "nope", "--out", str(tmp_path / cmd)]) == 2
