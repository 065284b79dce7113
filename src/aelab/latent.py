"""The latent space: interpolation, and density models q^Z fitted on training latents to sample from.

Interpolation (the lecture):  xi(x, x', a) = g((1 - a) f(x) + a f(x')).
Sampling (the lecture):       z ~ q^Z, x = g(z), with q^Z fitted on f(X_train).

Densities share scikit-learn's vocabulary: ``fit(z) -> self``, ``sample(n, seed) -> z``,
``log_prob(z) -> (N,)`` in nats.  The lecture's choice is "diag"; the others are what repairs it:

    diag   N(m, diag s^2)                      the lecture's "Results :("
    full   N(m, S), full covariance
    gmm    mixture of full Gaussians (scikit-learn), components given or chosen by held-out likelihood
    flow   RealNVP (Dinh et al., 2017): affine coupling layers trained by maximum likelihood
    prior  N(0, I): a VAE's prior, nothing to fit
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_info, threadpool_limits
from torch import nn
from tqdm.auto import tqdm

from aelab import kernels
from aelab.errors import ConfigError
from aelab.metrics import Codec, evaluating, inference_batch
from aelab.recipe import BF16_MIN_SPEEDUP, autocast


# --------------------------------------------------------------------------- interpolation
@torch.no_grad()
def interpolate(codec: Codec, x0: torch.Tensor, x1: torch.Tensor, steps: int = 12) -> torch.Tensor:
    """x0, x1: (P, C, H, W) pairs -> (P, steps, C, H, W), a = 0 ... 1; column 0 is g(f(x0)), the last g(f(x1))."""
    if isinstance(codec, nn.Module):
        codec.eval()
    z0, z1 = codec.encode(x0), codec.encode(x1)                   # (P, D)
    a = torch.linspace(0, 1, steps).view(1, steps, 1)
    z = ((1 - a) * z0[:, None] + a * z1[:, None]).flatten(0, 1)   # (P * steps, D)
    return codec.decode(z).view(len(x0), steps, *x0.shape[1:])


def random_pairs(n_items: int, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.choice(n_items, size=(n_pairs, 2), replace=False if 2 * n_pairs <= n_items else True)
    return idx[:, 0], idx[:, 1]


@torch.no_grad()
def encode_all(codec: Codec, x: torch.Tensor, batch_size: int | None = None, precision: str = "fp32") -> np.ndarray:
    """f(x) for all x: (N, C, H, W) -> (N, D) float64, in batches (``metrics.inference_batch`` unless given);
    ``precision`` "bf16" encodes under bf16 autocast (a network only; ``codes_precision`` says when it pays)."""
    with evaluating(codec) as (dev, fmt), autocast(dev, precision if isinstance(codec, nn.Module) else "fp32"):
        batch_size = batch_size or inference_batch(dev, x[0].numel())
        with kernels.for_inference(codec, lambda: codec.encode(x[:batch_size].to(dev).contiguous(memory_format=fmt))):
            z = [codec.encode(xb.to(dev).contiguous(memory_format=fmt)).cpu() for xb in x.split(batch_size)]
    return torch.cat(z).double().numpy()


def codes_precision(codec: Codec, x: torch.Tensor, trained: str, rounds: int = 7) -> dict:
    """The precision to encode a latent study's codes in: bf16 where ``codec`` was trained in it (``trained``, as
    its run.json records) and encoding a batch of x (N, C, H, W) under bf16 autocast measured at least
    ``recipe.BF16_MIN_SPEEDUP`` faster than in fp32 here (median of ``rounds`` pairs), else fp32.  The bf16 codes
    are the model's function as it was trained; they differ from the fp32 ones by bf16's rounding.  On
    a Zen 4 at one thread bf16 encoded 1.8x faster, and the latent part at d = 8 took 50.9 s against 57.4 s
    (docs/benchmarks.md, "The latent study's codes in bf16").  Returns {"precision", "speedup" (None: not
    measured), "reason"}."""
    if trained != "bf16" or not isinstance(codec, nn.Module):
        return {"precision": "fp32", "speedup": None, "reason": f"the model was trained in {trained}"}
    probe = x[: inference_batch(next(codec.parameters()).device, x[0].numel())]
    speedup = kernels.median_ratio((lambda: encode_all(codec, probe), lambda: encode_all(codec, probe,
                                                                                           precision="bf16")), rounds)
    choice = "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"
    return {"precision": choice, "speedup": speedup,
            "reason": f"trained in bf16; encoding in bf16 {speedup:.2f}x the speed of fp32 here "
                      f"({'>=' if choice == 'bf16' else '<'} {BF16_MIN_SPEEDUP}; median of {rounds} pairs)"}


@torch.no_grad()
def decode_all(codec: Codec, z: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
    """g(z) for all z: (N, D) -> (N, C, H, W) on the CPU (contiguous), in batches (``metrics.inference_batch``
    of the decoded image's size, learnt from the first latent, unless given)."""
    zt = torch.as_tensor(z, dtype=torch.float32)
    with evaluating(codec) as (dev, _):
        batch_size = batch_size or inference_batch(dev, codec.decode(zt[:1].to(dev))[0].numel())
        with kernels.for_inference(codec, lambda: codec.decode(zt[:batch_size].to(dev))):
            x = [codec.decode(zb.to(dev)).cpu().contiguous() for zb in zt.split(batch_size)]
    return torch.cat(x)


# --------------------------------------------------------------------------- densities
class DiagGaussian:
    """N(m, diag s^2): the lecture's model, m and s^2 estimated on training latents."""

    def fit(self, z: np.ndarray) -> DiagGaussian:
        self.mean_, self.var_ = z.mean(0), z.var(0) + 1e-12
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        return self.mean_ + np.sqrt(self.var_) * np.random.default_rng(seed).standard_normal((n, len(self.mean_)))

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        return -0.5 * (((z - self.mean_) ** 2 / self.var_) + np.log(2 * np.pi * self.var_)).sum(1)


class FullGaussian:
    """N(m, S) with the full covariance S."""

    def fit(self, z: np.ndarray) -> FullGaussian:
        self.mean_ = z.mean(0)
        self.cov_ = np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1]) + 1e-9 * np.eye(z.shape[1])
        self.chol_ = np.linalg.cholesky(self.cov_)
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        eps = np.random.default_rng(seed).standard_normal((n, len(self.mean_)))
        return self.mean_ + eps @ self.chol_.T

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        sol = np.linalg.solve(self.chol_, (z - self.mean_).T)  # L^-1 (z - m)
        logdet = 2 * np.log(np.diag(self.chol_)).sum()
        return -0.5 * ((sol**2).sum(0) + logdet + len(self.mean_) * np.log(2 * np.pi))


class StandardNormal:
    """N(0, I): the prior of a VAE. ``fit`` only records the dimension."""

    def fit(self, z: np.ndarray) -> StandardNormal:
        self.dim_ = z.shape[1]
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, self.dim_))

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        return -0.5 * (z**2 + np.log(2 * np.pi)).sum(1)


def blas_threads() -> int:
    """The BLAS threads this process has now (the fewest among its BLAS libraries; 1 when none is found)."""
    counts = [lib["num_threads"] for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return max(1, min(counts)) if counts else 1


class GMM:
    """Mixture of full-covariance Gaussians; ``n_components=None`` picks it among ``candidates`` by held-out
    likelihood.

    The search fits every candidate on (at most) ``subset`` training latents and scores each on (at most)
    ``held_out`` others, a fifth of them at most, never seen by the fit (``split``); the candidate with the
    highest mean held-out log-likelihood wins.  (BIC on the subset, which chose until 2026-12-06 and is still
    recorded in ``bic_``, charges every full covariance its d(d + 1)/2 parameters, and at d = 32 it chose 20
    components where the samples of 40 had a lower FID: docs/benchmarks.md, "The GMM's number of
    components".)  The chosen mixture is then refitted on all latents, EM starting from its subset fit rather
    than from a cold start (docs/latent-gmm.json: the d = 32 GMM of the default study 117 s instead of 193 s),
    for at most ``refit_iter`` iterations: from that start EM creeps.  On the default study's latents (Zen 4, one
    BLAS thread) 20 iterations took the d = 32 refit 15 s instead of the 36 s of its 51 to scikit-learn's
    tolerance, for a mean test log-likelihood 0.07 nats lower; at d = 16, 20 of 31, 0.007 nats lower; at d = 8
    EM converged in 17.  The sample FID moved along EM's path about as much as between sampling seeds (medians
    over 3 seeds at d = 16: 7.30 after 10 iterations, 8.09 after 20, 7.41 after 31; docs/benchmarks.md, "The
    study's last seconds"; docs/gmm-refit-zen4.json).  ``refit_converged_`` says whether it reached the tolerance.

    EM runs with one BLAS thread, and the candidates of the search are fitted side by side, as many at once as
    the process has BLAS threads (largest first): EM's products are skinny, (N, d) @ (d, d) for each component,
    and a second BLAS thread slowed them (the search of the default study's d = 32 GMM, 20000 latents, 2 CPU
    cores: 1.6x faster on one thread, 2.7x with two candidates at a time, every BIC the same:
    docs/gmm-threads.json, benchmarks/gmm_threads.py).  Each fit is seeded and single-threaded, so the result
    does not depend on how the fits were scheduled.

    EM runs on float32 latents: half the memory traffic of those products, and the GMMs of a default study
    (Zen 4, one BLAS thread) fitted 1.62x / 2.19x / 2.03x faster at d = 8 / 16 / 32, with the same number of
    components chosen, test log-likelihoods within 0.03 nats and sample FIDs within the spread of the sampling
    seed (docs/benchmarks.md, "The GMM's EM in float32, and the trainings' order"; docs/gmm-precision-zen4.json).
    A fit float32 cannot carry (a covariance singular at its precision, as for large latents on a plane:
    scikit-learn's "ill-defined empirical covariance") is redone in float64.  The fitted mixture is
    kept in float64, so sampling and log-likelihoods are computed as before.
    """

    def __init__(self, n_components: int | None = None, candidates=(1, 5, 10, 20, 40, 80), seed: int = 0,
                 subset: int = 20000, held_out: int = 10000, em_dtype=np.float32, refit_iter: int = 20):
        self.n_components, self.candidates, self.seed = n_components, candidates, seed
        self.subset, self.held_out, self.em_dtype = subset, held_out, np.dtype(em_dtype)
        self.refit_iter = refit_iter

    def _mixture(self, k: int, start: GaussianMixture | None = None, dtype=np.float64) -> GaussianMixture:
        """k components; from a cold start (k-means) for up to 300 iterations, or from ``start``'s mixture for up
        to ``refit_iter``."""
        init = {} if start is None else dict(weights_init=start.weights_.astype(dtype),
                                             means_init=start.means_.astype(dtype),
                                             precisions_init=start.precisions_.astype(dtype))
        return GaussianMixture(k, covariance_type="full", random_state=self.seed, reg_covar=1e-5,
                               max_iter=300 if start is None else self.refit_iter, **init)

    def _em(self, k: int, z: np.ndarray, start: GaussianMixture | None = None) -> GaussianMixture:
        """EM of k components on z: (n, d) in ``em_dtype``, redone in float64 where that fails; the result in
        float64."""
        with warnings.catch_warnings():
            if start is not None:  # a refit stopped by refit_iter: recorded in refit_converged_, not warned
                warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                mixture = self._mixture(k, start, self.em_dtype).fit(z.astype(self.em_dtype))
            except ValueError as e:  # scikit-learn's "ill-defined empirical covariance": singular at float32
                if "ill-defined" not in str(e) or self.em_dtype == np.float64:
                    raise
                mixture = self._mixture(k, start).fit(z.astype(np.float64))
        for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
            setattr(mixture, name, getattr(mixture, name).astype(np.float64))
        # float32's products leave each covariance asymmetric by more than numpy's sampler tolerates (1e-8)
        mixture.covariances_ = (mixture.covariances_ + mixture.covariances_.transpose(0, 2, 1)) / 2
        return mixture

    def split(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z: (N, d) -> (search subset, held-out latents), disjoint random rows (seeded): the subset is the first
        min(subset, N - n_held) of a permutation, the held-out the n_held = min(held_out, N // 5) after it."""
        if len(z) < 5:
            raise ConfigError(f"a GMM whose components are chosen needs at least 5 training latents, got {len(z)}; "
                              "fit it on more data or give its number of components (latent.gmm_components)")
        perm = np.random.default_rng(self.seed).permutation(len(z))
        n_held = min(self.held_out, len(z) // 5)
        n_sub = min(self.subset, len(z) - n_held)
        return z[perm[:n_sub]], z[perm[n_sub:n_sub + n_held]]

    def search(self, sub: np.ndarray, workers: int) -> dict[int, GaussianMixture]:
        """Every candidate (below len(sub)) fitted on ``sub``: (n, d), ``workers`` at a time, the largest first
        (it takes longest); under the caller's BLAS threads."""
        order = sorted((c for c in self.candidates if c < len(sub)), reverse=True)
        with ThreadPoolExecutor(workers) as pool:
            return dict(zip(order, pool.map(lambda c: self._em(c, sub), order), strict=True))

    def fit(self, z: np.ndarray) -> GMM:
        """z: (N, d) training latents."""
        k, start = self.n_components, None
        workers = blas_threads()
        with threadpool_limits(1, user_api="blas"):
            if k is None:
                sub, held = self.split(z)
                fits = self.search(sub, workers)
                self.held_out_loglik_ = {c: float(fits[c].score(held)) for c in sorted(fits)}
                self.bic_ = {c: float(fits[c].bic(sub)) for c in sorted(fits)}
                k = max(self.held_out_loglik_, key=self.held_out_loglik_.get)
                start = fits[k]
            self.model_ = self._em(k, z, start)
        self.n_components_, self.refit_converged_ = k, bool(self.model_.converged_)
        return self

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        self.model_.random_state = seed
        z, _ = self.model_.sample(n)
        return z[np.random.default_rng(seed).permutation(n)]  # sklearn returns samples grouped by component

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        return self.model_.score_samples(z)


class _Coupling(nn.Module):
    """Affine coupling: the unmasked half is scaled and shifted by functions of the masked half."""

    def __init__(self, dim: int, mask: torch.Tensor, hidden: int):
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2 * dim))
        nn.init.zeros_(self.net[-1].weight)  # start as the identity map
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (y, log|det dy/dx|) (the data-to-noise direction)."""
        s, t = self.net(x * self.mask).chunk(2, dim=1)
        s = torch.tanh(s) * (1 - self.mask)
        t = t * (1 - self.mask)
        return x * self.mask + (1 - self.mask) * (x * s.exp() + t), s.sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self.net(y * self.mask).chunk(2, dim=1)
        s = torch.tanh(s) * (1 - self.mask)
        return y * self.mask + (1 - self.mask) * ((y - t) * (-s).exp())


class Flow:
    """RealNVP in latent space: standardise z, then ``layers`` affine couplings to N(0, I)."""

    def __init__(self, layers: int = 6, hidden: int = 96, steps: int = 2000, batch_size: int = 256,
                 lr: float = 1e-3, seed: int = 0, progress: bool = False):
        self.layers, self.hidden, self.steps, self.batch_size = layers, hidden, steps, batch_size
        self.lr, self.seed, self.progress = lr, seed, progress

    def _log_prob_std(self, u: torch.Tensor) -> torch.Tensor:
        logdet = torch.zeros(len(u))
        for layer in self.couplings_:
            u, ld = layer(u)
            logdet = logdet + ld
        return -0.5 * (u.pow(2) + math.log(2 * math.pi)).sum(1) + logdet

    def fit(self, z: np.ndarray) -> Flow:
        with torch.random.fork_rng(devices=[]):  # seeded initial weights; the global RNG is left untouched
            torch.manual_seed(self.seed)
            return self._fit(z)

    def _fit(self, z: np.ndarray) -> Flow:
        dim = z.shape[1]
        self.mean_, self.std_ = z.mean(0), z.std(0) + 1e-8
        masks = [(torch.arange(dim) % 2 == i % 2).float() for i in range(self.layers)]
        if dim == 1:
            raise ConfigError("the flow density needs a latent of at least 2 dimensions")
        self.couplings_ = nn.ModuleList(_Coupling(dim, m, self.hidden) for m in masks)
        u = torch.as_tensor((z - self.mean_) / self.std_, dtype=torch.float32)
        opt = torch.optim.Adam(self.couplings_.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.steps)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in tqdm(range(self.steps), desc="flow", disable=not self.progress, leave=False):
            idx = torch.randint(len(u), (self.batch_size,), generator=gen)
            loss = -self._log_prob_std(u[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        self.couplings_.eval()
        return self

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        u = torch.randn(n, len(self.mean_), generator=torch.Generator().manual_seed(seed))
        for layer in reversed(self.couplings_):
            u = layer.inverse(u)
        return u.double().numpy() * self.std_ + self.mean_

    @torch.no_grad()
    def log_prob(self, z: np.ndarray) -> np.ndarray:
        u = torch.as_tensor((z - self.mean_) / self.std_, dtype=torch.float32)
        return self._log_prob_std(u).double().numpy() - np.log(self.std_).sum()


DENSITIES = {"diag": DiagGaussian, "full": FullGaussian, "gmm": GMM, "flow": Flow, "prior": StandardNormal}


def make_density(name: str, seed: int = 0, **options):
    if name not in DENSITIES:
        raise ConfigError(f"unknown density {name!r}; choose one of: {', '.join(DENSITIES)}")
    cls = DENSITIES[name]
    return cls(seed=seed, **options) if name in ("gmm", "flow") else cls(**options)
