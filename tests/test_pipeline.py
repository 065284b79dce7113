"""`aelab reproduce` as cached stages: a rerun reuses everything, a changed setting recomputes exactly what
depends on it, an interrupted training stage resumes at its epoch with the same weights, and the report
has every section, checked in a real browser (Debian's chromium driven by Playwright)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from aelab.cli import main
from aelab.config import resolve
from aelab.errors import ConfigError
from aelab.pipeline import plan_status, reproduce
from aelab.train import TrainingDiverged

TINY = ["data.name=synthetic", "sweep.dims=2,4", "latent.dims=4", "latent.vaes=1@4", "latent.n_samples=100",
        "latent.flow_steps=20", "latent.gmm_components=2", "latent.n_pairs=2", "sweep.n_show=12",
        "decoders.families=transposed,resize-bilinear", "decoders.models=4x2", "decoders.n_train=300",
        "decoders.n_samples=200", "decoders.cost_rounds=1", "decoders.init_seeds=2",
        "restore.datasets=synthetic", "restore.corruptions=noise:0.5", "restore.levels=noise:0.5,rect:0.25",
        "restore.d=4", "restore.n_val=50", "restore.n_show=12", "restore.n_train=none", "restore.n_test=none"]


# the tests that read the shared tiny run go to one xdist worker: the other would wait for it to be built
SHARED_RUN = pytest.mark.xdist_group("shared-run")


def tiny(*more: str):
    return resolve("quick", sets=[*TINY, *more])


def statuses(results) -> dict[str, str]:
    return {r.name: r.status for r in results}


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> Path:
    """One tiny reproduce, made once for the whole test session: xdist workers share it through a folder
    beside their own temporary folders, the first one builds it under a file lock.  Tests only read it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-reproduce"
    with FileLock(f"{shared}.lock"):
        if not (shared / "report" / "index.html").exists():
            results = reproduce(tiny(), shared, progress=False, echo=lambda s: None)
            assert set(statuses(results).values()) == {"computed"}
    return shared


@SHARED_RUN
def test_rerun_reuses_every_stage_and_a_changed_setting_recomputes_only_its_dependants(run, tmp_path):
    run = Path(shutil.copytree(run, tmp_path / "run"))   # a copy: other tests read the shared run
    assert set(statuses(reproduce(tiny(), run, progress=False, echo=lambda s: None)).values()) == {"reused"}
    # a training setting (the rate) recomputes every model and what reads one; the plan says so without
    # training them again (the plan and the run agree: the latent settings below are computed for real)
    recomputed = {n for n, s, _ in plan_status(tiny("train.lr=0.002"), run) if s != "reuse"}
    assert recomputed == {"ae-d2", "ae-d4", "vae-d4", "sweep", "latent-d4", "latent", "report", "decoders",
                          "ae-d4-n300", "ae-d4-s1-n300", "ae-d4-resize-bilinear-n300", "ae-d4-resize-bilinear-s1-n300",
                          "restore-synthetic-noise0.5", "restore-synthetic-blind", "restoration"}
    # a latent-study setting touches neither the models nor the sweep
    assert {n for n, s, _ in plan_status(tiny("latent.n_samples=50"), run) if s != "reuse"} == {
        "latent-d4", "latent", "report"}
    changed = statuses(reproduce(tiny("latent.n_samples=50"), run, progress=False, echo=lambda s: None))
    assert {n for n, s in changed.items() if s == "computed"} == {"latent-d4", "latent", "report"}
    # one more latent size computes that size's part alone (its model is the sweep's) and gathers the table again
    changed = statuses(reproduce(tiny("latent.n_samples=50", "latent.dims=2,4"), run, progress=False,
                                 echo=lambda s: None))
    assert {n for n, s in changed.items() if s == "computed"} == {"latent-d2", "latent", "report"}
    table = json.loads((run / "report" / "metrics.json").read_text())["stages"]["latent"]["rows"]
    assert [(r["d"], r["model"]) for r in table][:1] == [("-", "test images")]
    assert [r["d"] for r in table[1:]] == sorted(r["d"] for r in table[1:])  # d = 2's rows, then d = 4's
    assert {(r["d"], r["model"]) for r in table[1:]} == {(2, "AE"), (4, "AE"), (4, "VAE")}
    # the original settings are still complete in the store: nothing to compute
    assert {s for _, s, _ in plan_status(tiny(), run)} == {"reuse"}


@SHARED_RUN
def test_a_setting_added_since_keeps_the_keys_of_earlier_caches_until_it_is_changed(run):
    from aelab.config import to_dict
    from aelab.pipeline import train_stage

    cfg = tiny()
    # the train settings an earlier version keyed a training stage by: all of today's but train.warmup,
    # train.warm_epochs, train.cold_dims and train.eval_subset (never in a key: they change no weights)
    before = {k: v for k, v in to_dict(cfg.train).items()
              if k not in ("warmup", "warm_epochs", "cold_dims", "eval_subset")}
    assert train_stage(cfg, cfg.model).config["train"] == before
    assert {s for _, s, _ in plan_status(tiny("train.warmup=0.3"), run)} == {"reuse"}
    # another warm-up share is another schedule: every model and what reads one, as for another rate
    warm = {n for n, s, _ in plan_status(tiny("train.warmup=0.1"), run) if s != "reuse"}
    assert warm == {n for n, s, _ in plan_status(tiny("train.lr=0.002"), run) if s != "reuse"}
    assert train_stage(tiny("train.warmup=0.1"), cfg.model).config["train"]["warmup"] == 0.1


@SHARED_RUN
def test_warm_start_trains_each_smaller_d_from_the_largest_and_recomputes_only_what_reads_them(run, tmp_path):
    from aelab.experiments import load_trained
    from aelab.pipeline import decoder_study_models, warm_sources

    cfg = tiny("train.warm_epochs=2")  # the quick preset's models train 1 epoch; the warm-started one 2
    assert warm_sources(tiny()) == {}
    assert warm_sources(cfg) == {"ae-d2": "ae-d4"}  # the VAE at d = 4 is the only one of its kind: from scratch
    assert warm_sources(tiny("train.warm_epochs=2", "latent.vaes=1@2,4,2@2", "latent.dims=2,4")) == {
        "ae-d2": "ae-d4", "vae-d2": "vae-d4", "bvae2-d2": "vae-d4"}  # a beta-VAE from the largest VAE
    assert warm_sources(tiny("train.warm_epochs=2", "latent.vaes=1@2,4,2@2,4", "latent.dims=2,4")) == {
        "ae-d2": "ae-d4", "vae-d2": "vae-d4", "bvae2-d2": "bvae2-d4"}  # ... of its own beta where there is one
    # an autoencoder at a d of train.cold_dims trains from its own initial weights: the cached ae-d2 (its key
    # is that of the run trained without warm starts); a VAE at that d is still warm-started
    cold_d2 = tiny("train.warm_epochs=2", "train.cold_dims=2", "latent.vaes=1@2,4", "latent.dims=2,4")
    assert warm_sources(cold_d2) == {"vae-d2": "vae-d4"}
    assert {n: s for n, s, _ in plan_status(tiny("train.warm_epochs=2", "train.cold_dims=2"), run)}["ae-d2"] == "reuse"
    # the source, and every model that is not warm-started, keep their keys; a warm-started one is a stage of its
    # own, so that ae-d2 always names the model trained from its own initial weights
    assert {n for n, s, _ in plan_status(cfg, run) if s != "reuse"} == {"ae-d2-warm", "sweep", "report"}
    run = Path(shutil.copytree(run, tmp_path / "run"))
    changed = statuses(reproduce(cfg, run, progress=False, echo=lambda s: None))
    assert {n for n, s in changed.items() if s == "computed"} == {"ae-d2-warm", "sweep", "report"}
    folders = {n: path for n, _, path in plan_status(cfg, run)}
    assert "ae-d2" not in folders
    record = json.loads((folders["ae-d2-warm"] / "run.json").read_text())["config"]
    assert record["warm_start"] == {"from": f"ae-d4 (stage {folders['ae-d4'].name})",
                                    "own_initial_weights": ["encoder.8.weight", "encoder.8.bias", "decoder.0.weight"]}
    assert record["train"]["epochs"] == 2
    assert [e["epoch"] for e in json.loads((folders["ae-d2-warm"] / "metrics.json").read_text())["history"]] == [1, 2]
    # it trained from the source's weights: its decoder's inner layers are nearer the trained d = 4 model's than
    # the same layers of the d = 2 model trained from its own initial weights (seed 0 draws those layers
    # differently at each d: they follow the d-sized ones)
    source, warm = load_trained(folders["ae-d4"])[0], load_trained(folders["ae-d2-warm"])[0]
    cold = load_trained(next(p for n, _, p in plan_status(tiny(), run) if n == "ae-d2"))[0]
    for layer in ("decoder.2.weight", "decoder.4.weight", "decoder.6.weight"):
        near, far = (float((m.state_dict()[layer] - source.state_dict()[layer]).norm()) for m in (warm, cold))
        assert near < 0.5 * far, layer
    # the report says how its models were trained
    assert "started from that one's trained weights" in (run / "report" / "results.md").read_text()
    from aelab.config import to_dict
    from aelab.recipe import describe

    assert describe(to_dict(cold_d2.train)).endswith("trained 2 epoch(s), but the autoencoder at d = 2, from its own "
                                                  "initial weights")
    # the decoder study compares its families trained alike: its d = 2 transposed model is the one from its own
    # initial weights, here the cached one, beside the sweep's warm-started one
    with_decoders = tiny("train.warm_epochs=2", "decoders.models=2x1", "decoders.n_train=none")
    assert [v[0] for v in decoder_study_models(with_decoders).values()] == ["ae-d2", "ae-d2-resize-bilinear"]
    status = {n: s for n, s, _ in plan_status(with_decoders, run)}
    assert status["ae-d2"] == "reuse" and status["ae-d2-warm"] == "reuse"


# aelab.report.ran_on's end when some layers ran by taps, or with their bias apart
TAPS = r"(, [\w.]+(, [\w.]+)* by taps)?(, the bias of [\w.]+(, [\w.]+)* apart)?"


@SHARED_RUN
def test_report_has_every_section_with_figures_and_numbers(run):
    html = (run / "report" / "index.html").read_text()
    for section in ("data", "ops", "model", "sweep", "interpolation", "sampling", "decoders", "restoration", "training",
                    "run"):
        assert f'id="{section}"' in html
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    rows = metrics["stages"]["sweep"]["rows"]
    assert [(r["d"], r["model"]) for r in rows] == [(2, "CNN"), (2, "PCA"), (4, "CNN"), (4, "PCA")]
    assert all(0 <= r["class_kept"] <= 1 for r in rows)
    pca = {r["d"]: r["mse"] for r in rows if r["model"] == "PCA"}
    assert pca[4] < pca[2]  # more components never reconstruct worse
    for r in rows:  # every number in the table is on the page
        assert f"{r['mse']:.4f}" in html
    assert metrics["info"]["config"]["data"]["name"] == "synthetic"
    assert metrics["stages"]["ops"]["scores"]["coverage_k4_s3"]["2d"] == pytest.approx(27 / 16)
    figures = list((run / "report" / "figures").rglob("*.png"))
    assert len(figures) >= 12 and all(f.stat().st_size > 1000 for f in figures)
    md = (run / "report" / "results.md").read_text()
    assert "aelab reproduce --preset quick" in md and "| 4 | CNN |" in md
    # each training stage says where it ran and in which precision (the quick preset sets fp32), and which layers ran
    # by taps where fit measured them faster (aelab.kernels)
    trained = [name for name, s in metrics["stages"].items() if "history" in s]
    assert len(trained) >= 8
    for name in trained:
        assert re.search(rf"<td>{re.escape(name)}</td>(?:(?!</tr>).)*thread\(s\), fp32{TAPS}</td>", html, re.S)
        assert re.search(rf"^\| {re.escape(name)} \| [0-9.]+ \| .*thread\(s\), fp32{TAPS} \|$", md, re.M)
    # restoration: each level has the methods meant for it, the blind model everywhere, the specialised one where
    # it was trained; every score is on the page and in results.md
    rs = metrics["stages"]["restoration"]
    methods = {c: [r["method"] for r in rs["rows"] if r["corruption"] == c] for c in ("noise:0.5", "rect:0.25")}
    assert methods["noise:0.5"] == ["corrupted", "median", "gaussian", "tv", "wavelet", "nl-means", "pca",
                                    "specialised AE", "blind AE"]
    assert methods["rect:0.25"] == ["corrupted", "biharmonic", "pca", "blind AE"]
    for r in rs["rows"]:
        assert f"{r['psnr']:.2f}" in html and f"{r['psnr']:.2f}" in md and 0 <= r["ssim"] <= 1
    assert "## Restoration" in md and "### synthetic" in md
    # the latent study's codes: in fp32, as the quick preset's autoencoders were trained
    latent = [r for r in metrics["stages"]["latent"]["rows"] if r["model"] == "AE"]
    assert latent and {r["codes"] for r in latent} == {"fp32"}
    assert "encoded in bf16" not in html and "encoded in bf16" not in md
    assert any("restore-synthetic-noise0.5" in f for f in map(str, figures))


def test_a_latent_part_reads_the_precision_its_autoencoder_was_trained_in(tmp_path):
    from aelab.pipeline import _trained_precision
    from aelab.stages import Context

    (tmp_path / "bf16").mkdir()
    (tmp_path / "bf16" / "run.json").write_text(json.dumps({"precision": {"precision": "bf16", "speedup": 1.5}}))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(json.dumps({"seed": 0}))  # a run recorded before precision was
    ctx = Context(tmp_path, {"ae-d8": tmp_path / "bf16", "ae-d4": tmp_path / "old"})
    assert (_trained_precision(ctx, "ae-d8"), _trained_precision(ctx, "ae-d4")) == ("bf16", "fp32")
    # and the report names the latent sizes whose codes came out in bf16
    from aelab.report import facts

    rows = [{"d": "-", "model": "test images"}, *({"d": d, "model": "AE", "density": n, "codes": c}
                                                  for d, c in ((8, "bf16"), (16, "fp32"), (32, "bf16"))
                                                  for n in ("diag", "gmm")), {"d": 8, "model": "VAE"}]
    assert facts({"latent": {"metrics": {"rows": rows}}})["bf16_codes"] == [8, 32]


@SHARED_RUN
def test_report_renders_in_chromium(run, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="make setup installs playwright")
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run `make setup` (apt-get install chromium)"
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((run / "report" / "index.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert len(images) >= 15 and [src for src, width in images if width == 0] == []
    assert errors == []
    assert all(u.startswith("file://") for u in requests), [u for u in requests if not u.startswith("file://")]
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_interrupted_training_stage_resumes_at_its_epoch_with_identical_weights(tmp_path, monkeypatch):
    import aelab.train as train_mod

    cfg = resolve("quick", sets=[*TINY, "train.epochs=3", "data.n_train=300"])  # 3 steps an epoch
    straight = reproduce(cfg, tmp_path / "a", progress=False, echo=lambda s: None, targets=("ae-d2",))
    real_save, calls = train_mod.save_checkpoint, []

    def crash_after_two(*args, **kw):
        calls.append(args[1])
        out = real_save(*args, **kw)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies right after epoch 2's checkpoint
        return out

    monkeypatch.setattr(train_mod, "save_checkpoint", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        reproduce(cfg, tmp_path / "b", progress=False, echo=lambda s: None, targets=("ae-d2",))
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    lines = []
    resumed = reproduce(cfg, tmp_path / "b", progress=False, echo=lines.append, targets=("ae-d2",))
    assert any("ae-d2: resuming" in line for line in lines)
    history = json.loads((resumed[-1].path / "metrics.json").read_text())["history"]
    assert [e["epoch"] for e in history] == [1, 2, 3]
    weights = [load_file(str(next((r[-1].path / "checkpoints").glob("*.safetensors")))) for r in (straight, resumed)]
    assert weights[0].keys() == weights[1].keys()
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])


@SHARED_RUN
def test_jobs_compute_stages_side_by_side_into_the_same_keys_with_the_same_results(run, tmp_path):
    """--jobs 2 runs each stage in a worker process as soon as its needs are complete: the stages land under
    the keys one process gives them, with the same scores (up to the rounding of another thread count)."""
    lines: list[str] = []
    results = reproduce(tiny(), tmp_path / "par", progress=False, echo=lines.append, targets=("sweep",), jobs=2)
    assert statuses(results) == dict.fromkeys(["data", "evaluator", "ae-d2", "ae-d4", "pca", "sweep"], "computed")
    assert sum("computing in a worker process" in line for line in lines) == 6
    for r in results:  # the same key, so the same folder name as in the one-process run
        mine = json.loads((r.path / "metrics.json").read_text())
        theirs = json.loads((run / "stages" / r.name / r.path.name / "metrics.json").read_text())
        if r.name.startswith("ae-"):
            assert mine["test_mse"] == pytest.approx(theirs["test_mse"], rel=1e-5)
        if r.name == "sweep":
            for a, b in zip(mine["rows"], theirs["rows"], strict=True):
                assert (a["d"], a["model"]) == (b["d"], b["model"])
                assert a["mse"] == pytest.approx(b["mse"], rel=1e-5)
    rec = json.loads((tmp_path / "par" / "stages.json").read_text())
    assert rec["jobs"] == 2 and [s["status"] for s in rec["stages"]] == ["computed"] * 6
    again = reproduce(tiny(), tmp_path / "par", progress=False, echo=lambda s: None, targets=("sweep",), jobs=2)
    assert set(statuses(again).values()) == {"reused"}


def test_the_sweeps_autoencoders_leave_the_whole_test_set_to_the_sweep_the_others_score_it(tmp_path):
    """A study's autoencoder is scored by the sweep on the whole test set, so its training scores its last epoch
    on the per-epoch subset only; a model the sweep does not score (the VAE) keeps the whole test set."""
    import torch

    from aelab.data import to_float
    from aelab.experiments import load_splits, load_trained

    cfg = tiny("train.eval_subset=50")  # the synthetic test set has 200 images
    results = reproduce(cfg, tmp_path / "r", progress=False, echo=lambda s: None, targets=("sweep", "vae-d4"))
    path = {r.name: r.path for r in results}
    last = {n: json.loads((path[n] / "metrics.json").read_text())["history"][-1] for n in ("ae-d2", "ae-d4", "vae-d4")}
    assert {n: e["test_images"] for n, e in last.items()} == {"ae-d2": 50, "ae-d4": 50, "vae-d4": 200}
    # the sweep's score is the whole test set's, by PyTorch's own operators; the training's, its first 50 images
    x = to_float(load_splits(cfg.data)[1].images)
    model = load_trained(path["ae-d4"])[0]
    with torch.no_grad():
        err = (model(x) - x).pow(2).mean((1, 2, 3))
    row = next(r for r in json.loads((path["sweep"] / "metrics.json").read_text())["rows"]
               if (r["d"], r["model"]) == (4, "CNN"))
    assert row["mse"] == pytest.approx(float(err.mean()), rel=1e-5)
    assert last["ae-d4"]["test_mse"] == pytest.approx(float(err[:50].mean()), rel=1e-5)


def test_a_stage_failing_in_a_worker_raises_its_error_and_keeps_the_finished_stages(tmp_path):
    cfg = tiny("train.lr=1e9", "train.schedule=constant", "train.lr_scaling=none")  # the trainings diverge
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        reproduce(cfg, tmp_path / "r", progress=False, echo=lambda s: None, targets=("sweep",), jobs=2)
    done = {name for name, status, _ in plan_status(cfg, tmp_path / "r", targets=("sweep",)) if status == "reuse"}
    assert {"data", "evaluator"} <= done and not {"ae-d2", "ae-d4", "sweep"} & done
    with pytest.raises(ConfigError, match="at least 1"):
        reproduce(cfg, tmp_path / "r", progress=False, echo=lambda s: None, targets=("sweep",), jobs=0)


@pytest.mark.parametrize("stop", ["ctrl-c", "kill"])
def test_a_stopped_run_under_jobs_leaves_no_process_and_a_rerun_resumes_the_trainings(tmp_path, stop):
    """Ctrl-C reaches the run's whole process group; a kill (SIGKILL to the run's process alone, as the kernel's
    out-of-memory killer sends it) reaches its worker processes through the kernel.  Either way the run and its
    workers stop within seconds, the interrupted trainings keep their checkpoints, and a rerun resumes them."""
    # 3 steps an epoch; 2 epochs left after the first checkpoint, so that even a fast CPU is still training when
    # the signal comes
    out, sets = tmp_path / "r", [*TINY, "train.epochs=3", "data.n_train=300"]
    child = subprocess.Popen([sys.executable, "-m", "aelab", "reproduce", "--out", str(out), "--jobs", "2", "--quiet",
                              "--stage", "ae-d2", "--stage", "ae-d4", *sum((["--set", s] for s in sets), [])],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    deadline = time.monotonic() + 120
    while not list(out.glob("stages/ae-d*/*.partial/checkpoints/epoch-0001.json")):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()[0]
        time.sleep(0.05)
    if stop == "ctrl-c":
        os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C does: the signal goes to every process of the group
    else:
        os.kill(child.pid, signal.SIGKILL)   # the run alone: no handler of its own can run
    t0 = time.monotonic()
    try:
        output = child.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # not to leave them training after the test
        pytest.fail(f"60 s after the {stop} the run's output was still open: its worker processes were running")
    assert child.returncode != 0 and time.monotonic() - t0 < 30, output
    if stop == "ctrl-c":
        assert "KeyboardInterrupt" in output or child.returncode in (130, -signal.SIGINT), output
    left = ["unread"]
    while left and time.monotonic() - t0 < 30:  # the workers: signalled by the kernel, gone within moments
        time.sleep(0.5)
        ps = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-s", str(child.pid)], capture_output=True, text=True)
        left = [line for line in ps.stdout.splitlines() if not line.startswith("Z")]  # zombies aside
    assert left == [], left
    lines: list[str] = []
    results = reproduce(resolve("quick", sets=sets), out, progress=False, echo=lines.append, targets=("ae-d2", "ae-d4"),
                        jobs=2)
    assert any("resuming in a worker process" in line for line in lines), lines
    for r in results[1:]:
        assert [e["epoch"] for e in json.loads((r.path / "metrics.json").read_text())["history"]] == [1, 2, 3]


@SHARED_RUN
def test_reproduce_cli_prints_the_stage_table_and_the_report_path(run, tmp_path, capsys):
    args = ["reproduce", "--out", str(tmp_path / "r"), "--quiet", *sum((["--set", s] for s in TINY), [])]
    assert main([*args, "--dry-run"]) == 0
    assert "data.name" not in capsys.readouterr().err
    # the shared run's stages but its report and the sweep: computing those two, not retraining, is the test
    top = run / "stages"
    shutil.copytree(top, tmp_path / "r" / "stages",
                    ignore=lambda folder, names: [n for n in names if Path(folder) == top and n in ("report", "sweep")])
    assert main(args) == 0
    out = capsys.readouterr().out
    table = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "computed" in table["sweep"] and "computed" in table["report"] and "reused" in table["ae-d2"], out
    assert "report/index.html" in out and (tmp_path / "r" / "report" / "index.html").exists()
    assert main(["report", str(tmp_path / "r")]) == 0
    assert main(["docs", "--run", str(tmp_path / "r"), "--out", str(tmp_path / "docs")]) == 0
    assert "](figures/report/" in (tmp_path / "docs" / "results.md").read_text()


@SHARED_RUN
def test_skip_leaves_out_a_study_and_the_models_only_it_trains(run, tmp_path, capsys):
    full = {name: status for name, status, _ in plan_status(tiny(), run)}
    lean = {name: status for name, status, _ in plan_status(tiny(), run, skip=("restoration",))}
    assert set(full) - set(lean) == {"restoration", "restore-synthetic-noise0.5", "restore-synthetic-blind"}
    # everything else is the same stage with the same key (reused); the report needs fewer stages: a new key
    assert {n for n, s in lean.items() if s != "reuse"} == {"report"}
    lean = {name for name, _, _ in plan_status(tiny(), run, skip=("decoders", "restoration"))}
    assert not any("resize" in n or "-n300" in n or n == "decoders" for n in lean)
    with pytest.raises(Exception, match="studies a run may skip: decoders, restoration"):
        plan_status(tiny(), run, skip=("sweep",))
    # the CLI: --stage runs a stage and its needs only, --skip leaves the section out of the report
    args = ["reproduce", "--out", str(tmp_path / "r"), "--quiet", *sum((["--set", s] for s in TINY), [])]
    assert main([*args, "--stage", "ae-d2", "--dry-run"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if "/stages/" in line]
    assert listed == ["data", "ae-d2"]
    shutil.copytree(run / "stages", tmp_path / "r" / "stages")
    assert main([*args, "--skip", "restoration"]) == 0
    assert "report/index.html" in capsys.readouterr().out
    html = (tmp_path / "r" / "report" / "index.html").read_text()
    assert 'id="decoders"' in html and 'id="restoration"' not in html and "#restoration" not in html
    assert main(["docs", "--run", str(tmp_path / "r"), "--out", str(tmp_path / "docs"), "--name", "results-lean"]) == 0
    text = (tmp_path / "docs" / "results-lean.md").read_text()
    assert "--skip restoration" in text and "](figures/results-lean/" in text and "## Restoration" not in text
    assert (tmp_path / "docs" / "figures" / "results-lean" / "sweep").is_dir()
    # the time table says where each model was trained (the stage's own run.json): here, this CPU
    from aelab.runs import processor

    assert "| ae-d2 |" in text and f"{processor()}, " in text.split("| ae-d2 |")[-1].splitlines()[0]


@SHARED_RUN
def test_decoders_command_runs_the_decoder_study_stages(run, tmp_path, capsys):
    shutil.copytree(run / "stages", tmp_path / "r" / "stages")
    sets = ["--preset", "quick", *sum((["--set", s] for s in TINY), [])]  # the shared run's settings: reused
    assert main(["decoders", "--out", str(tmp_path / "r"), "--quiet", *sets]) == 0
    out = capsys.readouterr().out
    assert "| transposed |" in out and "| resize-bilinear |" in out and "tables and figures in" in out
    assert "computing" not in out  # every stage reused from the shared run
    # its own options override the section: one family is another study (computed), with another table
    assert main(["decoders", "--out", str(tmp_path / "r"), "--quiet", *sets, "--families", "transposed"]) == 0
    out = capsys.readouterr().out
    assert "| transposed |" in out and "resize-bilinear" not in out
