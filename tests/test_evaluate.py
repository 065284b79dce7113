"""Evaluation scores against closed forms, and digit-kept against the classifier's own accuracy."""

import json

import numpy as np
import pytest
import torch

from aelab.cli import main
from aelab.data import load, to_float
from aelab.evaluate import reconstruction_scores, scores
from aelab.experiments import DataConfig, SweepConfig, sweep, with_train
from aelab.train import TrainConfig


class Identity:
    def encode(self, x):
        return x.flatten(1)

    def decode(self, z):
        return z.view(len(z), 1, 28, 28)


class MeanImage:
    def __init__(self, mean):
        self.mean = mean

    def encode(self, x):
        return torch.zeros(len(x), 1)

    def decode(self, z):
        return self.mean.expand(len(z), *self.mean.shape)


def test_reconstruction_scores_closed_form():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.tensor([[[[0.1, 0.1], [0.1, 0.1]]], [[[0.2, 0.2], [0.2, 0.2]]]])
    s = reconstruction_scores(x, x_hat)
    assert s["mse"] == pytest.approx((0.01 + 0.04) / 2)
    assert s["loss"] == pytest.approx(0.5 * (4 * 0.01 + 4 * 0.04) / 2)
    assert s["psnr"] == pytest.approx((10 * np.log10(1 / 0.01) + 10 * np.log10(1 / 0.04)) / 2)


def test_digit_kept_of_the_identity_is_the_classifier_accuracy(small_judge, mnist_test):
    test = mnist_test.subset(2000)
    s = scores(Identity(), test, small_judge)
    assert s["mse"] == 0 and s["digit_kept"] == pytest.approx(small_judge.accuracy)
    assert small_judge.accuracy > 0.9  # even a quick classifier on 12000 digits is far above chance


def test_digit_kept_of_the_mean_image_is_one_class_share(small_judge, mnist_train, mnist_test):
    test = mnist_test.subset(2000)
    mean = to_float(mnist_train.images[:6000]).mean(0)
    s = scores(MeanImage(mean), test, small_judge)
    # every reconstruction is the same image, so it is "kept" exactly for the test digits of one class
    shares = {c: float((test.labels == c).mean()) for c in range(10)}
    assert any(s["digit_kept"] == pytest.approx(v) for v in shares.values())


def test_sweep_writes_table_and_lecture_figures(tmp_path, small_judge, monkeypatch):
    import aelab.experiments as ex

    monkeypatch.setattr(ex, "judge_for", lambda cfg, progress=True: small_judge)  # skip the 6-epoch classifier
    cfg = with_train(SweepConfig(dims=(2, 8), data=DataConfig("mnist", 1000, 500)), epochs=1)
    rows = sweep(cfg, tmp_path, progress=False)
    assert [(r["d"], r["model"]) for r in rows] == [(2, "CNN"), (2, "PCA"), (8, "CNN"), (8, "PCA")]
    pca = {r["d"]: r["mse"] for r in rows if r["model"] == "PCA"}
    assert pca[8] < pca[2]
    assert (tmp_path / "figures" / "reconstructions-d8.png").exists()
    assert "| 8 | PCA |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.csv").read_text().startswith("d,model,mse,loss,psnr,digit_kept")
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["config"]["dims"] == [2, 8] and run["data"]["mnist/test"] == load("mnist", "test").subset(
        500).content_hash()


def test_sweep_cli_end_to_end_on_synthetic_data(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "--dataset", "synthetic", "--dims", "2", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    assert "| 2 | CNN |" in capsys.readouterr().out
    assert main(["sweep", "--dims", "2,x", "--out", str(out)]) == 2


def test_train_config_is_recorded_with_the_run(tmp_path):
    from aelab.experiments import AEConfig, train_autoencoder

    cfg = AEConfig(d=4, data=DataConfig("synthetic", 200, 50), train=TrainConfig(epochs=1, seed=7))
    _, metrics = train_autoencoder(cfg, tmp_path, progress=False)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 7 and run["config"]["spec"] == "32:5:1,32:5:1,32:4:2,32:3:2,4:4:1"
    assert set(run["data"]) == {"synthetic/train", "synthetic/test"} and metrics["epochs"] == 1
