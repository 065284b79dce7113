"""Reconstruction scores against closed forms, class kept against the classifier's own accuracy, and the
shipped evaluators (hash-checked, accurate on the real test sets)."""

import json
import shutil

import numpy as np
import pytest
import torch

from aelab import AelabError
from aelab.data import to_float
from aelab.metrics import reconstruction_scores, scores


class Identity:
    def encode(self, x):
        return x.flatten(1)

    def decode(self, z):
        return z.view(len(z), 1, 28, 28)


class Constant:
    """Decodes everything to one fixed image (to check the scores against closed forms)."""

    def __init__(self, image):
        self.image = image

    def encode(self, x):
        return torch.zeros(len(x), 1)

    def decode(self, z):
        return self.image.expand(len(z), *self.image.shape)


def test_reconstruction_scores_closed_form():
    x = torch.stack([torch.full((1, 2, 2), 0.1), torch.full((1, 2, 2), 0.2)])   # (2, 1, 2, 2)
    s = reconstruction_scores(Constant(torch.zeros(1, 2, 2)), x, batch_size=1)  # batches must not matter
    assert s["mse"] == pytest.approx((0.01 + 0.04) / 2)
    assert s["loss"] == pytest.approx(0.5 * (4 * 0.01 + 4 * 0.04) / 2)
    assert s["psnr"] == pytest.approx((10 * np.log10(1 / 0.01) + 10 * np.log10(1 / 0.04)) / 2)


def test_trainer_evaluation_and_scores_agree_with_a_direct_computation():
    from aelab.models import AutoEncoder
    from aelab.train import evaluate_loss

    torch.manual_seed(0)
    model, x = AutoEncoder(4), torch.rand(30, 1, 28, 28)
    with torch.no_grad():
        sse = (model(x) - x).pow(2).sum()
    ev = evaluate_loss(model, x, batch_size=7)
    assert ev["mse"] == pytest.approx(float(sse) / x.numel(), rel=1e-5)
    assert ev["loss"] == pytest.approx(0.5 * float(sse) / 30, rel=1e-5)


def test_evaluations_in_default_batches_equal_one_call_on_the_whole_set():
    """reconstruct, encode_all, decode_all and the classifier split the images into ``inference_batch``
    batches: the answer is the network applied to all of them at once (PyTorch's own forward)."""
    from aelab.evaluator import Judge
    from aelab.latent import decode_all, encode_all
    from aelab.metrics import inference_batch, reconstruct
    from aelab.models import AutoEncoder
    from aelab.models.classifier import DigitClassifier
    from aelab.quality import classifier_outputs

    torch.manual_seed(0)
    model, net = AutoEncoder(4), DigitClassifier(10).eval()  # eval: the classifier has dropout
    n = inference_batch(torch.device("cpu"), 28 * 28) * 2 + 3  # two full batches and a short one
    x = torch.rand(n, 1, 28, 28)
    with torch.no_grad():  # the classifier as built (contiguous), before the Judge lays it out channels_last
        z, x_hat, probs, feats = model.encode(x), model(x), net(x).softmax(1), net.features(x)
    judge = Judge(net, accuracy=1.0)
    assert torch.allclose(reconstruct(model, x), x_hat, atol=1e-5)
    assert np.allclose(encode_all(model, x), z.numpy(), atol=1e-5)
    assert torch.allclose(decode_all(model, z.numpy()), x_hat, atol=1e-5)
    assert torch.allclose(judge.predict(x), probs, atol=1e-6)
    f, p = classifier_outputs(judge, x)
    assert np.allclose(f, feats.numpy(), atol=1e-5) and np.allclose(p, probs.numpy(), atol=1e-6)
    assert model.training and model.encoder[0].weight.is_contiguous()  # mode and layout given back


def test_the_cpu_evaluation_batch_shrinks_with_the_image_and_stays_in_range():
    from aelab.metrics import CPU_BATCH_VALUES, inference_batch

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    sizes = [1, 28 * 28, 3 * 64 * 64, 3 * 128 * 128, 3 * 512 * 512]
    batches = [inference_batch(cpu, v) for v in sizes]
    assert batches == sorted(batches, reverse=True) and batches[0] == 1000 and batches[-1] == 1
    # in between, the largest batch whose input values fit the budget
    assert all(b * v <= CPU_BATCH_VALUES < (b + 1) * v for b, v in zip(batches[1:-1], sizes[1:-1], strict=True))
    assert inference_batch(gpu, 28 * 28) == 1000


def test_class_kept_of_the_identity_is_the_classifier_accuracy(judge, mnist_test):
    test = mnist_test.subset(2000)
    s = scores(Identity(), test, judge)
    x = to_float(test.images)
    with torch.no_grad():  # the classifier's accuracy on these digits: the network on all of them at once
        accuracy = float((judge.model.eval()(x).argmax(1).numpy() == test.labels).mean())
    assert s["mse"] == 0 and s["class_kept"] == pytest.approx(accuracy) and accuracy > 0.98


def test_class_kept_of_the_mean_image_is_one_class_share(judge, mnist_train, mnist_test):
    test = mnist_test.subset(2000)
    mean = to_float(mnist_train.images[:6000]).mean(0)
    s = scores(Constant(mean), test, judge)
    # every reconstruction is the same image, so it is "kept" exactly for the test digits of one class
    shares = {c: float((test.labels == c).mean()) for c in range(10)}
    assert any(s["class_kept"] == pytest.approx(v) for v in shares.values())


def test_shipped_mnist_evaluator_is_the_one_used_and_accurate(mnist_train, mnist_test):
    from aelab.evaluator import SHIPPED_DIR, judge_for

    judge = judge_for(mnist_train, mnist_test, progress=False)
    assert judge.source == str(SHIPPED_DIR / "mnist.safetensors")
    # the recorded accuracy is the real one: recompute it on the 10000 test digits
    acc = judge.class_kept(to_float(mnist_test.images), mnist_test.labels)
    assert acc == pytest.approx(judge.accuracy) and acc > 0.99


def test_shipped_fashion_evaluator_is_accurate():
    from aelab.data import load
    from aelab.evaluator import SHIPPED_DIR, judge_for

    try:
        train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    except AelabError:
        pytest.skip("Fashion-MNIST is not installed (make setup installs Debian's dataset-fashion-mnist)")
    judge = judge_for(train, test, progress=False)
    assert judge.source == str(SHIPPED_DIR / "fashion-mnist.safetensors")
    acc = judge.class_kept(to_float(test.images), test.labels)
    assert acc == pytest.approx(judge.accuracy) and acc > 0.9


def test_damaged_evaluator_weights_are_refused(tmp_path):
    from aelab.evaluator import SHIPPED_DIR, load_judge

    for f in ("mnist.safetensors", "mnist.json"):
        shutil.copyfile(SHIPPED_DIR / f, tmp_path / f)
    with open(tmp_path / "mnist.safetensors", "r+b") as f:
        f.seek(5000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(AelabError, match="damaged"):
        load_judge(tmp_path / "mnist.safetensors")
    (tmp_path / "mnist.json").write_text("{")
    with pytest.raises(AelabError, match="unreadable"):
        load_judge(tmp_path / "mnist.safetensors")


def test_unlabelled_data_has_no_evaluator_and_other_labelled_data_gets_a_cached_one(tmp_path):
    from aelab.data import load
    from aelab.evaluator import judge_for

    train, test = load("synthetic", "train"), load("synthetic", "test")
    j1 = judge_for(train, test, progress=False)
    assert j1.accuracy > 0.5 and "evaluators" in j1.source      # 10 stroke angles: far above chance (0.1)
    assert judge_for(train, test, progress=False).source == j1.source  # trained once, then read back
    unlabelled = train.subset(indices=np.flatnonzero(train.labels == 0))
    assert judge_for(unlabelled, test, progress=False) is None


def test_train_cli_records_the_config_and_scores(tmp_path, capsys):
    from aelab.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--n-train", "200", "--epochs", "1", "--seed", "7", "--d", "4",
                 "--out", str(out), "--quiet"]) == 0
    assert "class kept" in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 7 and run["config"]["effective_spec"] == "32:5:1,32:5:1,32:4:2,32:3:2,4:4:1"
    assert set(run["data"]) == {"synthetic/train", "synthetic/test"}
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
