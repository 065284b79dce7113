"""Training: the lecture's loss, learning on real MNIST, determinism, checkpoints, resume, divergence."""

import json

import pytest
import torch

from aelab.cli import main
from aelab.config import lecture_train
from aelab.data import to_float
from aelab.models import AutoEncoder
from aelab.train import (
    TrainingDiverged,
    fit,
    latest_checkpoint,
    lecture_loss,
    load_checkpoint,
    load_model_weights,
)


@pytest.fixture(scope="module")
def small(mnist_train, mnist_test):
    return to_float(mnist_train.images[:5000]), to_float(mnist_test.images[:1000])


def test_lecture_loss_closed_form():
    out, x = torch.zeros(4, 1, 2, 2), torch.ones(4, 1, 2, 2)
    assert float(lecture_loss(out, x)) == pytest.approx(0.5 * 4)  # 0.5 * 4 pixels * 1^2 per image


def _model(seed=0, d=8):
    torch.manual_seed(seed)
    return AutoEncoder(d)


def test_short_run_on_real_mnist_beats_the_mean_image(small, capsys):
    train_x, test_x = small[0][:3500], small[1]
    # closed-form baseline: the best constant image (the training mean) has loss 0.5 * sum of variances
    mean_image_loss = float(0.5 * (test_x - train_x.mean(0)).pow(2).sum() / len(test_x))
    model = _model()
    # 2 epochs of 3500 digits: test MSE 0.038 and 0.58x the mean image's loss on a Zen 1 (seed 0)
    h = fit(model, train_x, test_x, lecture_train(epochs=2, batch_size=50), progress=False)
    assert h.last["test_loss"] < 0.85 * mean_image_loss
    assert h.last["test_mse"] < 0.045
    assert [e["epoch"] for e in h.epochs] == [1, 2]
    assert h.mean_image_mse == pytest.approx(2 * mean_image_loss / test_x[0].numel(), rel=1e-5)
    assert "same picture" not in capsys.readouterr().err  # a model that learned is not called collapsed


def test_a_collapsed_model_is_named_with_its_fix(small, capsys):
    # the collapse of a too-high learning rate, made certain: decoder.6's ReLU dead for every input, so the
    # decoder gives its last bias, one constant picture, whatever the image (a learning rate of 1e-3 for 3 steps
    # cannot move a bias of -1000 back)
    train_x, test_x = small[0][:300], small[1][:200]
    model = _model()
    with torch.no_grad():
        model.decoder[6].bias.fill_(-1000.0)
    h = fit(model, train_x, test_x, lecture_train(epochs=1), progress=False)
    with torch.no_grad():
        x_hat = model.decode(model.encode(test_x[:4]))
    assert torch.equal(x_hat[0], x_hat[3])  # the same picture for every input
    err = capsys.readouterr().err
    assert "epoch 1: test MSE" in err and "mean training image" in err and "--set model.init=kaiming" in err
    assert h.last["test_mse"] >= 0.9 * h.mean_image_mse


def test_he_init_trains_where_pytorchs_stuck_at_the_mean_image(small):
    # seed 10, 5000 digits, 2 epochs of the default recipe: from PyTorch's initial weights it stayed at the mean
    # image (test MSE 0.068 in docs/short-runs/steps200.json, and in 5 epochs too), from He et al.'s it learned
    from aelab.config import ModelConfig, TrainConfig
    from aelab.experiments import build_model

    train_x, test_x = small
    model = build_model(ModelConfig(d=8, init="kaiming"), (1, 28, 28), seed=10)
    h = fit(model, train_x, test_x, TrainConfig(epochs=2, seed=10, precision="fp32"), progress=False)
    assert h.last["test_mse"] < 0.75 * h.mean_image_mse


def test_a_checkpoint_from_before_model_init_resumes_as_pytorchs_init():
    # checkpoints written before model.init existed trained from PyTorch's initial weights: their record resumes
    # under the default, and is refused for kaiming (another experiment)
    from dataclasses import asdict, replace

    from aelab.config import ModelConfig, TrainConfig
    from aelab.errors import ConfigError
    from aelab.train import check_resume

    cfg, model = TrainConfig(), asdict(ModelConfig())
    old = {"train_config": asdict(cfg), "epoch": 1,
           "config": {"model": {k: v for k, v in model.items() if k != "init"}}}
    assert check_resume(old, cfg, {"config": {"model": model}}) == []
    with pytest.raises(ConfigError, match="another model"):
        check_resume(old, cfg, {"config": {"model": asdict(replace(ModelConfig(), init="kaiming"))}})


def test_a_checkpoint_from_before_adam_beta2_resumes_as_pytorchs_betas():
    # checkpoints written before train.adam_beta2 existed trained with PyTorch's 0.999: the lecture's recipe
    # resumes them; today's default (0.99) is refused, naming the setting, unless the change is allowed
    from dataclasses import asdict

    from aelab.config import TrainConfig, lecture_train
    from aelab.errors import ConfigError
    from aelab.recipe import describe
    from aelab.train import check_resume

    for cfg in (lecture_train(), TrainConfig(adam_beta2=0.999)):
        old = {"train_config": {k: v for k, v in asdict(cfg).items() if k != "adam_beta2"}, "epoch": 1}
        assert check_resume(old, cfg, {}) == []
    old = {"train_config": {k: v for k, v in asdict(TrainConfig()).items() if k != "adam_beta2"}, "epoch": 1}
    with pytest.raises(ConfigError, match=r"train.adam_beta2 0.999 -> 0.99"):
        check_resume(old, TrainConfig(), {})
    assert check_resume(old, TrainConfig(), {}, allow_change=["train.adam_beta2"]) == ["adam_beta2"]
    assert "the lecture's recipe" in describe({k: v for k, v in asdict(lecture_train()).items() if k != "adam_beta2"})
    assert "beta2 0.99," in describe(asdict(TrainConfig()))


def test_same_seed_same_weights(small):
    train_x, test_x = small[0][:500], small[1][:100]
    a, b = _model(), _model()
    fit(a, train_x, test_x, lecture_train(epochs=1), progress=False)
    fit(b, train_x, test_x, lecture_train(epochs=1), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_resumed_run_continues_from_the_same_state(small, tmp_path):
    train_x, test_x = small[0][:300], small[1][:100]
    straight = _model()
    h_straight = fit(straight, train_x, test_x, lecture_train(epochs=3), tmp_path / "a", progress=False)

    interrupted = _model()
    fit(interrupted, train_x, test_x, lecture_train(epochs=1), tmp_path / "b", progress=False)
    resumed = _model(seed=123)  # different initial weights: everything must come from the checkpoint
    h_resumed = fit(resumed, train_x, test_x, lecture_train(epochs=3), tmp_path / "b", resume=True, progress=False)
    for p, q in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert [e["train_loss"] for e in h_resumed.epochs] == [e["train_loss"] for e in h_straight.epochs]


def test_epochs_before_the_last_are_scored_on_the_first_eval_subset_test_images_the_last_on_all(small, tmp_path,
                                                                                              capsys):
    train_x, test_x = small[0][:300], small[1][:100]
    model = _model()
    h = fit(model, train_x, test_x, lecture_train(epochs=2, eval_subset=40), tmp_path, progress=True)
    assert [e["test_images"] for e in h.epochs] == [40, 100]
    printed = [line for line in capsys.readouterr().out.splitlines() if "test mse" in line]
    assert "(first 40 test images)" in printed[0] and "first" not in printed[1]  # what the score was taken on

    def mse(m, x):  # the truth, by PyTorch's own operators
        with torch.no_grad():
            return float((m(x) - x).pow(2).mean())

    first = load_model_weights(tmp_path / "checkpoints" / "epoch-0001.safetensors", _model(seed=5))
    assert h.epochs[0]["test_mse"] == pytest.approx(mse(first, test_x[:40]), rel=1e-5)
    assert h.epochs[1]["test_mse"] == pytest.approx(mse(model, test_x), rel=1e-5)
    # none: every epoch on the whole test set
    h = fit(_model(), train_x, test_x, lecture_train(epochs=2, eval_subset=None), progress=False)
    assert [e["test_images"] for e in h.epochs] == [100, 100]


def test_checkpoint_round_trip(small, tmp_path):
    model = _model()
    fit(model, small[0][:300], small[1][:50], lecture_train(epochs=1), tmp_path, progress=False,
        record={"data": {"x": "hash"}})
    meta = latest_checkpoint(tmp_path)
    rec = json.loads(meta.read_text())
    assert rec["epoch"] == 1 and rec["data"] == {"x": "hash"} and rec["train_config"]["seed"] == 0
    assert rec["environment"]["versions"]["torch"].startswith("2.")
    fresh = load_model_weights(meta.with_suffix(".safetensors"), _model(seed=5))
    for p, q in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    opt = torch.optim.Adam(fresh.parameters())
    load_checkpoint(meta, fresh, opt)
    assert all(int(s["step"]) == 3 for s in opt.state.values())  # 300 images / 100 per batch


def test_resuming_into_a_different_architecture_is_refused(small, tmp_path):
    from aelab import AelabError

    fit(_model(), small[0][:200], small[1][:50], lecture_train(epochs=1), tmp_path, progress=False)
    with pytest.raises(AelabError, match="does not fit this model.*--d"):
        fit(_model(d=4), small[0][:200], small[1][:50], lecture_train(epochs=2), tmp_path, resume=True,
            progress=False)


def test_damaged_checkpoint_is_skipped_on_resume(small, tmp_path):
    model = _model()
    fit(model, small[0][:200], small[1][:50], lecture_train(epochs=2), tmp_path, progress=False)
    weights = tmp_path / "checkpoints" / "epoch-0002.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert latest_checkpoint(tmp_path).name == "epoch-0001.json"


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small, tmp_path):
    train_x = small[0][:400].clone()
    model = _model()
    fit(model, train_x, small[1][:50], lecture_train(epochs=1, shuffle=False), tmp_path, progress=False)
    train_x[350] = float("nan")
    with pytest.raises(TrainingDiverged, match="epoch 2.*epoch-0001.json"):
        fit(model, train_x, small[1][:50], lecture_train(epochs=3, shuffle=False), tmp_path, resume=True,
            progress=False)
    assert latest_checkpoint(tmp_path).name == "epoch-0001.json"
    assert not (tmp_path / "checkpoints" / "epoch-0002.json").exists()


def test_the_loss_is_checked_every_few_steps_not_only_at_the_end_of_an_epoch(small, tmp_path, monkeypatch):
    """The loss is read back every LOSS_CHECK_EVERY steps (not every step: that stalls a GPU); a NaN in the
    first batch stops the run at the first check, long before the end of the epoch."""
    import aelab.train

    monkeypatch.setattr(aelab.train, "LOSS_CHECK_EVERY", 2)
    train_x = small[0][:1000].clone()
    train_x[0] = float("nan")
    with pytest.raises(TrainingDiverged, match="epoch 1, by step 1;"):
        fit(_model(), train_x, small[1][:50], lecture_train(epochs=1, shuffle=False), tmp_path, progress=False)


def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "lecture", "--dataset", "synthetic", "--out", str(out), "--n-train", "300",
            "--quiet"]
    assert main([*args, "--epochs", "1"]) == 0
    assert "test: mse" in capsys.readouterr().out
    assert main([*args, "--epochs", "1"]) == 2  # refuses to overwrite checkpoints
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and (out / "run.json").exists()
