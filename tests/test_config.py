"""The configuration model: every impossible value is refused naming the field, presets and overrides
compose in order, unknown keys are refused, and the CLI exposes the same options on every command."""

import dataclasses

import pytest
import torch

from aelab.cli import main
from aelab.config import (
    Config,
    DataConfig,
    LatentConfig,
    ModelConfig,
    OpsConfig,
    RestoreConfig,
    SweepConfig,
    TrainConfig,
    from_dict,
    parse_set,
    presets,
    resolve,
    to_dict,
    to_toml,
)
from aelab.errors import ConfigError

# (section class, field, impossible value, what the message must name)
BAD_VALUES = [
    (TrainConfig, "batch_size", 0, "train.batch_size"),
    (TrainConfig, "batch_size", -5, "train.batch_size"),
    (TrainConfig, "epochs", -1, "train.epochs"),
    (TrainConfig, "epochs", 0, "train.epochs"),
    (TrainConfig, "lr", -1e-3, "train.lr"),
    (TrainConfig, "lr", 0.0, "train.lr"),
    (TrainConfig, "lr", float("nan"), "train.lr"),
    (TrainConfig, "lr", float("inf"), "train.lr"),
    (TrainConfig, "seed", -1, "train.seed"),
    (TrainConfig, "device", "tpu", "train.device"),
    (TrainConfig, "eval_batch_size", 0, "train.eval_batch_size"),
    (TrainConfig, "cold_dims", (0,), "train.cold_dims"),
    (TrainConfig, "cold_dims", (8, 8), "each latent size once"),
    (DataConfig, "name", "cifar", "data.name"),
    (DataConfig, "n_train", 0, "data.n_train"),
    (DataConfig, "n_test", -3, "data.n_test"),
    (ModelConfig, "init", "xavier", "model.init"),
    (ModelConfig, "kind", "gan", "model.kind"),
    (ModelConfig, "d", 0, "model.d"),
    (ModelConfig, "beta", -1.0, "model.beta"),
    (ModelConfig, "beta", 4.0, "model.beta"),             # beta with kind = ae
    (ModelConfig, "spec", "32:5", "32:5"),                # 2 fields where 3 are documented
    (ModelConfig, "spec", "32:0:1", "out of range"),
    (ModelConfig, "spec", "32:5:1:-1", "out of range"),
    (ModelConfig, "spec", "", "empty"),
    (SweepConfig, "dims", (), "sweep.dims"),
    (SweepConfig, "dims", (0, 8), "sweep.dims"),
    (SweepConfig, "dims", (8, 8), "sweep.dims"),
    (SweepConfig, "n_show", 0, "sweep.n_show"),
    (LatentConfig, "dims", (), "latent.dims"),
    (LatentConfig, "densities", ("diag", "kde"), "latent.densities"),
    (LatentConfig, "densities", (), "latent.densities"),
    (LatentConfig, "vaes", ("x@8",), "latent.vaes"),
    (LatentConfig, "vaes", ("1@",), "latent.vaes"),
    (LatentConfig, "n_samples", 1, "latent.n_samples"),
    (LatentConfig, "steps", 1, "latent.steps"),
    (LatentConfig, "gmm_components", 0, "latent.gmm_components"),
    (RestoreConfig, "datasets", ("cifar",), "restore.datasets"),
    (RestoreConfig, "corruptions", ("blur:9",), "restore.corruptions: corruption 'blur:9': blur takes sigma in"),
    (RestoreConfig, "corruptions", ("smudge:1",), "restore.corruptions: unknown corruption 'smudge'"),
    (RestoreConfig, "corruptions", ("blind",), "restore.blind = true"),
    (RestoreConfig, "levels", (), "restore.levels"),
    (RestoreConfig, "levels", ("down:3",), "down takes factor 2 or 4"),
    (RestoreConfig, "n_val", 5, "restore.n_val"),
    (OpsConfig, "strides", (), "ops.strides"),
    (OpsConfig, "kernel", 0, "ops.kernel"),
]


def test_kaiming_init_is_refused_where_icnr_is_the_init():
    with pytest.raises(ConfigError, match="model.init.*ICNR"):
        ModelConfig(init="kaiming", decoder="pixel-shuffle-icnr")


@pytest.mark.parametrize("cls,name,value,named", BAD_VALUES)
def test_impossible_values_are_refused_naming_the_field(cls, name, value, named):
    with pytest.raises(ConfigError) as e:
        cls(**{name: value})
    assert named in str(e.value) and "\n" not in str(e.value)


def test_the_lecture_preset_is_the_lectures_recipe_and_the_default_is_the_same_study():
    assert {"default", "quick", "lecture"} <= set(presets())
    lecture, default = resolve("lecture"), resolve()
    assert (lecture.train.epochs, lecture.train.lr, lecture.train.batch_size, lecture.train.schedule,
            lecture.train.lr_scaling, lecture.train.precision) == (10, 1e-3, 100, "constant", "none", "fp32")
    assert lecture.sweep.dims == (2, 4, 8, 16, 32) and lecture.model.spec == "32:5:1,32:5:1,32:4:2,32:3:2,8:4:1"
    # the default preset is the lecture's study with aelab's recipe: only the train section differs
    assert default.train == TrainConfig() and default.train != lecture.train
    assert dataclasses.replace(default, train=lecture.train, preset="lecture") == lecture
    quick = resolve("quick")
    assert quick.train.epochs == 1 and quick.data.name == lecture.data.name and quick.data.n_train == 30000
    assert quick.train.schedule == "constant" and quick.train.lr == 1e-3
    # the lecture's Adam is PyTorch's, betas included; aelab's default forgets gradient scales sooner
    torch_beta2 = torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults["betas"][1]
    assert lecture.train.adam_beta2 == quick.train.adam_beta2 == torch_beta2 != default.train.adam_beta2


def test_overrides_apply_in_order_and_are_typed(tmp_path):
    f = tmp_path / "my.toml"
    f.write_text("[train]\nepochs = 3\nlr = 0.01\n[sweep]\ndims = [2, 4]\n")
    cfg = resolve("quick", f, ["train.lr=3e-3", "sweep.dims=8,16", "data.n_train=none"], {"train": {"seed": 5}})
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.seed) == (3, 3e-3, 5)
    assert cfg.sweep.dims == (8, 16) and cfg.data.n_train is None
    assert parse_set("data.name=fashion-mnist") == ("data", "name", "fashion-mnist")


@pytest.mark.parametrize("sets,named", [
    (["train.lrr=1"], "train.lrr"),
    (["trian.lr=1"], "trian"),
    (["train.epochs=two"], "train.epochs"),
    (["train.epochs=1.5"], "train.epochs"),
    (["train.shuffle=maybe"], "train.shuffle"),
    (["epochs=2"], "section.key=value"),
    (["train.lr"], "section.key=value"),
])
def test_bad_set_items_are_refused_naming_the_key(sets, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        resolve("quick", sets=sets)


def test_bad_config_files_are_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 2")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve("quick", bad)
    bad.write_text("[model]\nwidth = 3\n")
    with pytest.raises(ConfigError, match="unknown key model.width"):
        resolve("quick", bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve("quick", tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve("slow")


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = resolve("quick", sets=["latent.vaes=1@8,16", "train.lr=0.002"])
    f = tmp_path / "c.toml"
    f.write_text(to_toml(cfg))
    again = resolve("lecture", f)
    assert dataclasses.replace(again, preset="quick") == cfg
    assert from_dict(to_dict(cfg) | {}, "quick").train == cfg.train
    assert Config().preset == "default"


@pytest.mark.parametrize("argv,named", [
    (["train", "--out", "X", "--batch-size", "0"], "train.batch_size"),
    (["train", "--out", "X", "--epochs", "-1"], "train.epochs"),
    (["train", "--out", "X", "--lr", "-0.001"], "train.lr"),
    (["train", "--out", "X", "--spec", "32:5,8:4:1"], "32:5"),
    (["train", "--out", "X", "--model", "gan"], "model.kind"),
    (["train", "--out", "X", "--d", "0"], "model.d"),
    (["train", "--out", "X", "--dataset", "nope"], "data.name"),
    (["sweep", "--dims", "2,x"], "sweep.dims"),
    (["sweep", "--set", "train.lr=fast"], "train.lr"),
    (["latent", "--set", "latent.densities=kde"], "latent.densities"),
    (["reproduce", "--set", "nope.x=1", "--dry-run"], "nope"),
    (["reproduce", "--preset", "slow", "--dry-run"], "unknown preset"),
    (["interpolate", "--run", "X", "--dataset", "x"], "data.name"),
    (["model", "summary", "--spec", "32:5:1:1:1"], "32:5:1:1:1"),
])
def test_cli_refuses_each_impossible_value_in_one_line(argv, named, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # nothing written


def test_every_training_command_has_the_same_options(capsys):
    for cmd in (["train"], ["sweep"], ["latent"], ["reproduce"]):
        assert main([*cmd, "--help"]) == 0
        text = capsys.readouterr().out
        for opt in ("--epochs", "--lr", "--batch-size", "--device", "--dataset", "--seed", "--preset", "--config",
                    "--set"):
            assert opt in text, (cmd, opt)
    for cmd in (["interpolate"], ["sample"]):
        assert main([*cmd, "--help"]) == 0
        assert "--preset" in capsys.readouterr().out


def test_dry_run_prints_the_resolved_config_and_the_plan(tmp_path, capsys):
    assert main(["reproduce", "--dry-run", "--set", "train.epochs=2", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "epochs = 2" in out and "[latent]" in out and "ae-d8" in out and "compute" in out
    assert not (tmp_path / "r").exists()
