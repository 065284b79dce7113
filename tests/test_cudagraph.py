"""The CUDA-graph training step (aelab.cudagraph): used only where it can be, recorded with the run, its
checkpoints resumable on any device; on a GPU it follows the eager step's loss curve.

The GPU tests run where a GPU is (on a lent machine: `python3 -m pytest tests/test_cudagraph.py`); CI has none
and runs the rest."""

import json

import pytest
import torch

from aelab import cudagraph
from aelab.config import lecture_train
from aelab.data import to_float
from aelab.models import AutoEncoder
from aelab.models.vae import VAE
from aelab.train import fit, latest_checkpoint

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def _model(seed=0):
    torch.manual_seed(seed)
    return AutoEncoder(8)


@pytest.fixture(scope="module")
def small(mnist_train, mnist_test):
    return to_float(mnist_train.images[:5000]), to_float(mnist_test.images[:200])


def test_graphs_are_used_only_where_nothing_in_the_step_needs_the_host(monkeypatch):
    cuda, ae = torch.device("cuda"), AutoEncoder(8)
    assert cudagraph.reason_not(cuda, ae, 1, False, "fp32") is None
    assert cudagraph.reason_not(torch.device("cpu"), ae, 1, False, "fp32") == "not on a GPU"
    assert "several processes" in cudagraph.reason_not(cuda, ae, 2, False, "fp32")
    assert "corrupted" in cudagraph.reason_not(cuda, ae, 1, True, "fp32")
    assert "random" in cudagraph.reason_not(cuda, VAE(8), 1, False, "fp32")
    assert cudagraph.reason_not(cuda, ae, 1, False, "bf16") == "bf16 autocast"
    monkeypatch.setenv(cudagraph.ENV, "off")
    assert cudagraph.reason_not(cuda, ae, 1, False, "fp32") == f"{cudagraph.ENV}=off"


def test_a_cpu_run_records_its_eager_step(small, tmp_path):
    h = fit(_model(), small[0][:200], small[1][:50], lecture_train(epochs=1, device="cpu"), tmp_path,
            progress=False)
    assert h.step == {"step": "eager", "reason": "not on a GPU"}
    assert json.loads(latest_checkpoint(tmp_path).read_text())["step"] == h.step


def test_a_checkpoint_of_a_graphed_run_resumes_on_the_cpu(small, tmp_path):
    """A graphed run's Adam is capturable with its rate in a GPU tensor; its checkpoint must resume where Adam
    cannot be capturable (the CPU), and the record must hold the rate as a number.  The GPU's checkpoint is
    made here by marking a CPU checkpoint the way a graphed run writes it."""
    train_x, test_x = small[0][:300], small[1][:50]
    straight = _model()
    fit(straight, train_x, test_x, lecture_train(epochs=2, device="cpu"), tmp_path / "a", progress=False)
    fit(_model(), train_x, test_x, lecture_train(epochs=1, device="cpu"), tmp_path / "b", progress=False)
    meta = latest_checkpoint(tmp_path / "b")
    rec = json.loads(meta.read_text())
    rec["optimizer"]["param_groups"][0]["capturable"] = True
    meta.write_text(json.dumps(rec))
    resumed = _model(seed=9)
    fit(resumed, train_x, test_x, lecture_train(epochs=2, device="cpu"), tmp_path / "b", resume=True,
        progress=False)
    for p, q in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    groups = json.loads(latest_checkpoint(tmp_path / "b").read_text())["optimizer"]["param_groups"]
    assert groups[0]["capturable"] is False and groups[0]["lr"] == 1e-3


def test_a_tensor_learning_rate_is_recorded_as_a_number(tmp_path):
    from aelab.train import save_checkpoint

    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=torch.tensor(2e-3))  # as cudagraph.adam makes it, on a GPU
    meta = save_checkpoint(tmp_path, 1, model, optimizer, {})
    assert json.loads(meta.read_text())["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-3)


def test_set_lr_writes_into_a_tensor_rate_and_sets_a_number():
    a = torch.optim.Adam(_model().parameters(), lr=torch.tensor(1e-3))
    rate = a.param_groups[0]["lr"]
    cudagraph.set_lr(a, 5e-3)
    assert a.param_groups[0]["lr"] is rate and float(rate) == pytest.approx(5e-3)  # the tensor a graph reads
    b = torch.optim.Adam(_model().parameters(), lr=1e-3)
    cudagraph.set_lr(b, 5e-3)
    assert b.param_groups[0]["lr"] == 5e-3


@gpu
def test_graphed_steps_follow_the_eager_loss_curve(small, tmp_path, monkeypatch):
    """A one-cycle schedule (the rate changes every step: the graph must read it, not keep the rate it was
    recorded with) on 5000 digits in batches of 64 (the last one smaller: an eager step between replays),
    graphed and eager.  Same arithmetic up to rounding (capturable Adam computes its bias corrections in fp32
    on the GPU), which training amplifies (benchmarks/cuda_graph.py), so the curves agree to a tolerance."""
    from aelab.config import TrainConfig

    cfg = TrainConfig(epochs=3, batch_size=64, lr=2e-3, lr_scaling="none", device="cuda", precision="fp32")
    graphed = fit(_model(), *small, cfg, tmp_path / "g", progress=False)
    monkeypatch.setenv(cudagraph.ENV, "off")
    eager = fit(_model(), *small, cfg, tmp_path / "e", progress=False)
    assert graphed.step["step"] == "CUDA graph" and eager.step["step"] == "eager"
    assert eager.last["test_mse"] < 0.7 * eager.epochs[0]["test_mse"]  # it learns (a 0.7 factor it clears on the CPU)
    for a, b in zip(graphed.epochs, eager.epochs, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=5e-2)
        assert a["test_mse"] == pytest.approx(b["test_mse"], rel=5e-2)


@gpu
def test_a_graphed_run_resumes_on_the_gpu(small, tmp_path):
    """The lecture's recipe (constant rate: its epochs may be extended) stopped after 1 epoch and resumed to 2
    (the graph recorded afresh, Adam's state from the checkpoint) ends where 2 straight epochs end."""
    data = small[0][:1000], small[1]
    straight = fit(_model(), *data, lecture_train(epochs=2, device="cuda"), tmp_path / "a", progress=False)
    fit(_model(), *data, lecture_train(epochs=1, device="cuda"), tmp_path / "b", progress=False)
    resumed = fit(_model(seed=4), *data, lecture_train(epochs=2, device="cuda"), tmp_path / "b", resume=True,
                  progress=False)
    assert resumed.step["step"] == "CUDA graph" and len(resumed.epochs) == 2
    assert resumed.last["test_mse"] == pytest.approx(straight.last["test_mse"], rel=2e-2)
