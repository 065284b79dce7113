"""Warm start against training from scratch, on the models of a finished study (``aelab reproduce``).

For each named model of the study (``ae-d8``, ``vae-d8``, ``bvae4-d16``, ...) this scores the study's own model,
then trains the same architecture for each of ``--epochs`` with aelab's default recipe, starting as ``--start``
says, and scores it the same way:

- ``warm``: from the study's trained model that the default plan starts it from (``aelab.pipeline.warm_sources``:
  the largest-d model of its kind), every layer but the two at the latent (``aelab.models.warm``);
- ``svd``: as ``warm``, with the two layers at the latent the source's projected on the top-d right singular
  vectors of its training codes (the best rank-d linear map of the source's code; AE only);
- ``from-ae``: a VAE from the study's AE at the same d: its code rescaled to unit RMS per latent (as the prior
  wants), the log-variance half of the encoder's last layer 0 with bias ``--logvar``, the decoder's last layer
  mapped to logits (10 x_hat - 5); VAE only.

    python benchmarks/warm_start.py --run runs/zen4-heldout --models ae-d8,vae-d8 --start warm --epochs 1,2 \\
        [--compare runs/zen4-warm] --out docs/recipe-trials/zen4-warm-start.json

``--kernels auto,torch`` trains each once with aelab.kernels' choice and once with PyTorch's kernels only.
``--source STAGE`` starts ``warm`` and ``svd`` from that stage of ``--run`` instead of the plan's source.
``--freeze`` keeps the named layers' copied weights fixed while it trains (no gradient: less backward, and
the layers nearest the image, trained at the source's d, are kept as they are).

``--compare RUN`` also scores the same models of another study (say, one whose plan warm-started them); with
``--epochs ''`` nothing is trained.

Scores, on the full test set: per-pixel MSE of the reconstruction and the digit kept (the shipped classifier);
for a VAE also its negative ELBO and, as the latent study scores it, the FID and confident share of
``latent.n_samples`` decoded samples from its prior.  Seconds are those of ``fit`` alone; run nothing beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aelab.config import LatentConfig, TrainConfig, resolve
from aelab.data import to_float
from aelab.evaluator import judge_for
from aelab.experiments import build_model, load_splits, load_trained, sample_reference
from aelab.io import atomic_write_text
from aelab.latent import decode_all, encode_all, make_density
from aelab.metrics import reconstruct
from aelab.models.warm import latent_layers, warm_start_
from aelab.pipeline import warm_sources
from aelab.quality import sample_scores
from aelab.runs import environment
from aelab.train import fit


def stage_dir(run: Path, name: str) -> Path:
    """The folder of stage ``name`` in a study run (runs/X/stages/NAME/KEY): of several keys (a study rerun with
    other settings), the one trained last."""
    found = list((run / "stages" / name).glob("*/run.json"))
    if not found:
        raise SystemExit(f"{run} has no trained stage {name}; run `aelab reproduce --out {run}` first")
    return max(found, key=lambda p: p.stat().st_mtime).parent


def scores(model: torch.nn.Module, kind: str, data, judge, ref, latent: LatentConfig) -> dict:
    """Test MSE and digit kept; for a VAE also its test negative ELBO and its prior samples' FID."""
    x, labels = to_float(data[1].images), data[1].labels
    model.eval()
    x_hat = reconstruct(model, x)
    out = {"test_mse": float((x_hat - x).pow(2).mean()), "digit_kept": judge.class_kept(x_hat, labels)}
    if kind == "vae":
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the ELBO's one sampled code per image
            out["test_neg_elbo"] = float(sum(model.loss(x[i:i + 1000]) * len(x[i:i + 1000])
                                             for i in range(0, len(x), 1000)) / len(x))
        prior = make_density("prior").fit(np.zeros((1, model.latent_dim)))
        s = sample_scores(ref, decode_all(model, prior.sample(latent.n_samples, seed=latent.seed)))
        out |= {"prior_fid": s["fid"], "prior_confident": s["confident"]}
    return out


def svd_bottleneck_(model: torch.nn.Module, source: torch.nn.Module, x_train: torch.Tensor) -> None:
    """The two layers at the latent of ``model`` (d) the source's (D > d) projected on the top-d right singular
    vectors of the source's training codes: (N, D)."""
    enc, dec = latent_layers(model)
    _, _, vh = torch.linalg.svd(torch.as_tensor(encode_all(source, x_train)).float(), full_matrices=False)
    p, sd = vh[: model.latent_dim], source.state_dict()  # p: (d, D)
    with torch.no_grad():
        model.get_submodule(enc).weight.copy_(torch.einsum("kc,cihw->kihw", p, sd[f"{enc}.weight"]))
        model.get_submodule(enc).bias.copy_(p @ sd[f"{enc}.bias"])
        model.get_submodule(dec).weight.copy_(torch.einsum("kc,cohw->kohw", p, sd[f"{dec}.weight"]))


def from_ae_(vae: torch.nn.Module, ae: torch.nn.Module, x_train: torch.Tensor, logvar: float) -> None:
    """A VAE begins as the AE of its d: the code rescaled to unit RMS, a fixed log-variance, logits out."""
    enc, dec = latent_layers(vae)
    last = f"decoder.{len(vae.decoder) - 1}"
    rms = torch.as_tensor(encode_all(ae, x_train)).float().pow(2).mean(0).sqrt()  # (d,)
    sd, own = ae.state_dict(), vae.state_dict()
    own |= {k: v.clone() for k, v in sd.items() if k in own and own[k].shape == v.shape}
    w, b = sd[f"{enc}.weight"], sd[f"{enc}.bias"]
    own[f"{enc}.weight"] = torch.cat([w / rms.view(-1, 1, 1, 1), torch.zeros_like(w)])
    own[f"{enc}.bias"] = torch.cat([b / rms, torch.full_like(b, logvar)])
    own[f"{dec}.weight"] = sd[f"{dec}.weight"] * rms.view(-1, 1, 1, 1)
    own[f"{last}.weight"], own[f"{last}.bias"] = sd[f"{last}.weight"] * 10, sd[f"{last}.bias"] * 10 - 5
    vae.load_state_dict(own)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a finished study (aelab reproduce --out RUN)")
    p.add_argument("--models", default="ae-d8", help="stage names, comma-separated")
    p.add_argument("--start", default="warm", help="warm, svd, from-ae; comma-separated")
    p.add_argument("--epochs", default="2", help="epochs of each training, comma-separated; '': none")
    p.add_argument("--compare", type=Path, help="another study whose models of these names are scored too")
    p.add_argument("--logvar", type=float, default=-4.0, help="from-ae: the initial log-variance")
    p.add_argument("--seeds", default="0", help="train.seed of each training (its data order and the initial weights "
                   "of the layers at the latent), comma-separated")
    p.add_argument("--lr", type=float, default=TrainConfig().lr, help="the one-cycle peak (at batch 100) of each "
                   "training")
    p.add_argument("--kernels", default="auto", help="train.kernels of each training, comma-separated (auto, torch)")
    p.add_argument("--source", help="warm, svd: the stage of RUN to start from instead of the plan's (say "
                   "ae-d16-warm: a chain of warm starts)")
    p.add_argument("--freeze", default="", help="layers whose copied weights stay fixed while it trains, "
                   "comma-separated (encoder.0,encoder.2); several sets separated by ';'; '': none")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    cfg, latent = resolve("default"), LatentConfig()
    sources = warm_sources(cfg)
    first = load_trained(stage_dir(args.run, args.models.split(",")[0]))
    data = load_splits(first[2])
    x_train = to_float(data[0].images)
    judge = judge_for(*data, progress=False)
    ref = sample_reference(judge, data[0])
    result = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "environment": environment(),
              "torch_threads": torch.get_num_threads(), "run": str(args.run), "rows": []}

    def record(row: dict) -> None:
        print(json.dumps(row), flush=True)
        result["rows"].append(row)
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")

    for name in args.models.split(","):
        own, model_cfg, _ = load_trained(stage_dir(args.run, name))
        record({"model": name, "start": "the study's", **scores(own, model_cfg.kind, data, judge, ref, latent)})
        if args.compare is not None:
            warm = args.compare / "stages" / f"{name}-warm"  # a warm-started stage (runs made before that name: NAME)
            other = load_trained(stage_dir(args.compare, warm.name if warm.is_dir() else name))[0]
            record({"model": name, "start": f"the study {args.compare}'s",
                    **scores(other, model_cfg.kind, data, judge, ref, latent)})
        for start in args.start.split(","):
            source_name = f"ae-d{model_cfg.d}" if start == "from-ae" else args.source or sources.get(name)
            if start not in ("warm", "svd", "from-ae") or source_name is None or \
                    {"svd": "ae", "from-ae": "vae"}.get(start, model_cfg.kind) != model_cfg.kind:
                raise SystemExit(f"--start {start} does not apply to {name} (warm: every model the default plan "
                                 f"warm-starts, {', '.join(sources)}; svd: those of them that are AEs; from-ae: VAEs)")
            source = load_trained(stage_dir(args.run, source_name))[0]
            for epochs, frozen, kern, seed in ((int(e), f, k, int(s)) for e in args.epochs.split(",") if e
                                               for f in args.freeze.split(";") for k in args.kernels.split(",")
                                               for s in args.seeds.split(",")):
                model = build_model(model_cfg, data[0].shape, seed)
                if start == "from-ae":
                    from_ae_(model, source, x_train, args.logvar)
                else:
                    warm_start_(model, source)
                    if start == "svd":
                        svd_bottleneck_(model, source, x_train)
                at_start = scores(model, model_cfg.kind, data, judge, ref, latent)
                for layer in filter(None, frozen.split(",")):  # no gradient, so no update and less backward
                    model.get_submodule(layer).requires_grad_(False)
                t0 = time.perf_counter()
                history = fit(model.train(), x_train, to_float(data[1].images),
                              dataclasses.replace(TrainConfig(), epochs=epochs, kernels=kern, seed=seed, lr=args.lr),
                              progress=False)
                seconds = time.perf_counter() - t0
                record({"model": name, "start": start, "source": source_name, "epochs": epochs, "frozen": frozen,
                        "seed": seed, "lr": args.lr, "kernels": history.kernels,
                        "seconds": seconds, "precision": history.precision.get("precision"),
                        "at_start": at_start, **scores(model, model_cfg.kind, data, judge, ref, latent)})


if __name__ == "__main__":
    main()
