"""One configuration model for every command and study: frozen dataclasses, validated when built.

    Config
      data    DataConfig     which dataset, how much of it
      model   ModelConfig    ae | vae, latent size d, encoder spec, beta
      train   TrainConfig    the lecture's recipe: epochs, batch size, Adam's lr, seed, device
      sweep   SweepConfig    the d-sweep: CNN vs PCA at each d
      latent  LatentConfig   interpolation and sampling: densities, VAEs, sample counts
      decoders DecodersConfig the decoder families compared
      restore RestoreConfig  restoring autoencoders against classical baselines
      ops     OpsConfig      the operator figures

A value that cannot work (batch size 0, a negative learning rate, an empty list of d, an unknown density,
a spec field out of range) raises ``ConfigError`` naming the field, the value and what is accepted.

Presets are TOML files shipped in ``aelab/configs`` (``default``, ``lecture``, ``quick``); ``resolve`` applies, in
order, the dataclass defaults, a preset, a user's TOML file and ``--set section.key=value`` overrides.  Unknown
sections or keys are refused, naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from aelab.errors import ConfigError

LECTURE_SPEC_TEXT = "32:5:1,32:5:1,32:4:2,32:3:2,8:4:1"
MODEL_KINDS = ("ae", "vae")
DENSITY_NAMES = ("diag", "full", "gmm", "flow")


def _fail(section: str, name: str, value: Any, accepted: str) -> typing.NoReturn:
    raise ConfigError(f"{section}.{name} = {value!r} is not allowed: {accepted}")


def _int_at_least(section: str, name: str, value: Any, low: int, none_ok: bool | str = False) -> None:
    """none_ok: None is allowed too (a string: what none means there; True: all)."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        meaning = none_ok if isinstance(none_ok, str) else "all"
        _fail(section, name, value, f"use an integer >= {low}" + (f" (or none for {meaning})" if none_ok else ""))


def _positive_float(section: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        _fail(section, name, value, "use a finite number > 0")


def _share(section: str, name: str, value: Any, zero_ok: bool, accepted: str) -> None:
    """value a number in [0, 1) (in (0, 1) unless ``zero_ok``), else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < 1) or (
            value == 0 and not zero_ok):
        _fail(section, name, value, accepted)


def _one_of(section: str, name: str, value: Any, choices) -> None:
    if value not in choices:
        _fail(section, name, value, f"choose one of {', '.join(map(str, choices))}")


def help_of(cls, name: str) -> str:
    """The help text of a config field (shared by every CLI option bound to it)."""
    return next(f.metadata.get("help", "") for f in fields(cls) if f.name == name)


def _f(default, help: str, **kw):  # noqa: A002  (a dataclass field with its CLI help text)
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataConfig:
    name: str = _f("mnist", "Dataset name (see 'aelab data list').")
    n_train: int | None = _f(None, "Use the first N training images only (default: all).")
    n_test: int | None = _f(None, "Use the first N test images only (default: all).")
    data_dir: str | None = _f(None, "Folder holding the dataset's files (idx, images; mnist / fashion-mnist "
                                    "from your own copy).")

    def __post_init__(self) -> None:
        from aelab.data import SOURCES

        _one_of("data", "name", self.name, sorted(SOURCES))
        _int_at_least("data", "n_train", self.n_train, 1, none_ok=True)
        _int_at_least("data", "n_test", self.n_test, 1, none_ok=True)
        if self.name in ("idx", "images") and not self.data_dir:
            _fail("data", "data_dir", self.data_dir, f"dataset {self.name!r} needs --data-dir FOLDER")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = _f("ae", "ae (the lecture's autoencoder) or vae (same architecture, negative ELBO).")
    d: int = _f(8, "Latent channels d (the last encoder layer's channels).")
    spec: str = _f(LECTURE_SPEC_TEXT, "Encoder layers channels:kernel:stride[:padding], comma-separated.")
    beta: float = _f(1.0, "VAE only: weight of the KL term (1: VAE, other: beta-VAE).")
    decoder: str = _f("transposed", "Decoder family: transposed (the lecture's), resize-nearest, resize-bilinear, "
                                    "pixel-shuffle, pixel-shuffle-icnr.")
    init: str = _f("pytorch", "Initial weights: pytorch (PyTorch's default, the lecture's) or kaiming (He et al.'s "
                              "for ReLU networks, biases 0: short runs did not stick at the mean image with it).")

    def __post_init__(self) -> None:
        from aelab.models.autoencoder import INITS
        from aelab.models.decoders import DECODERS

        _one_of("model", "kind", self.kind, MODEL_KINDS)
        _one_of("model", "decoder", self.decoder, tuple(DECODERS))
        _one_of("model", "init", self.init, INITS)
        if self.init == "kaiming" and self.decoder == "pixel-shuffle-icnr":
            _fail("model", "init", self.init, "ICNR is its own initialisation (decoder pixel-shuffle-icnr); use "
                                              "init = pytorch with it, or decoder = pixel-shuffle")
        _int_at_least("model", "d", self.d, 1)
        _positive_float("model", "beta", self.beta)
        if self.kind == "ae" and self.beta != 1.0:
            _fail("model", "beta", self.beta, "beta applies to model.kind = vae only; leave it at 1")
        self.layers  # parse now: a malformed spec fails when the config is built  # noqa: B018

    @property
    def layers(self):
        """The spec as a tuple of ``ConvSpec`` (its last layer's channels are replaced by d when built)."""
        from aelab.models.autoencoder import parse_spec

        return parse_spec(self.spec)


@dataclass(frozen=True)
class TrainConfig:
    # aelab's default recipe (benchmarks/ttq.py: the lecture recipe's 10-epoch quality in 3 epochs at batch 50); the
    # lecture's own is `--preset lecture` (10 epochs, constant 1e-3, fp32)
    epochs: int = _f(3, "Training epochs.")
    warm_epochs: int | None = _f(2, "In a study (aelab reproduce): the epochs of each sweep and latent-study model "
                                    "that starts from the trained model of the largest d of its kind (AE or VAE, of "
                                    "its beta where that d has one), every layer but the two at the latent; none: "
                                    "every model from its own initial weights for `epochs` (see aelab.models.warm).")
    cold_dims: tuple[int, ...] = _f((8,), "In a study under warm_epochs: the latent sizes whose autoencoder trains "
                                          "from its own initial weights for `epochs` all the same (d = 8: the "
                                          "lecture's model, at the quality the time-to-quality benchmark measures; "
                                          "see aelab.recipe); []: none.")
    batch_size: int = _f(50, "Mini-batch size.")
    lr: float = _f(8e-3, "Adam's (peak) learning rate, stated at batch 100 when lr_scaling = sqrt.")
    adam_beta2: float = _f(0.99, "Adam's second-moment decay: 0.99 averages the squared gradients over about 100 "
                                 "steps; the lecture's, PyTorch's default, is 0.999 (see aelab.recipe).")
    seed: int = _f(0, "Seed of the initial weights and of the data order.")
    shuffle: bool = _f(True, "Seeded shuffle per epoch (false: the slide's fixed order).")
    device: str = _f("auto", "auto (GPU when present), cpu or cuda.")
    channels_last: bool = _f(True, "channels_last memory format on CPU (faster convolutions, same results "
                                   "up to rounding).")
    eval_batch_size: int = _f(1000, "Batch size of the per-epoch test evaluation.")
    eval_subset: int | None = _f(2000, "Test images scored after each epoch but the last (the first N; none: all): "
                                       "the last epoch on the whole test set, but for a study's autoencoders, "
                                       "which the sweep scores on it.")
    schedule: str = _f("onecycle", "Learning-rate schedule: constant (the lecture's), onecycle (warm-up to lr, "
                                   "cosine down; see aelab.recipe) or onecycle-linear (both along straight lines).")
    warmup: float = _f(0.3, "Share of the steps over which a one-cycle rate rises to its peak (OneCycleLR's "
                            "pct_start).")
    lr_scaling: str = _f("sqrt", "none: lr as given; sqrt: lr is the rate at batch 100, batch B uses "
                                 "lr*sqrt(B/100).")
    precision: str = _f("auto", "fp32, bf16 (autocast, fp32 weights) or auto (bf16 only where a short "
                                "measurement shows it faster; recorded in run.json).")
    kernels: str = _f("auto", "On a CPU: auto (the decoder's last layer, a stride-1 convolution into the image's "
                              "channels, by a matrix product and shifted adds, a transposed convolution's bias "
                              "added after it, and under bf16 the small layers whose bf16 kernels are slow in "
                              "fp32, each where a short measurement shows it faster; recorded in run.json), torch "
                              "(PyTorch's kernels always) or taps (that last layer by taps always; aelab.kernels).")

    def __post_init__(self) -> None:
        from aelab.kernels import KERNELS
        from aelab.recipe import LR_SCALINGS, PRECISIONS, SCHEDULES

        _one_of("train", "schedule", self.schedule, SCHEDULES)
        _one_of("train", "lr_scaling", self.lr_scaling, LR_SCALINGS)
        _one_of("train", "precision", self.precision, PRECISIONS)
        _one_of("train", "kernels", self.kernels, KERNELS)
        _int_at_least("train", "epochs", self.epochs, 1)
        _int_at_least("train", "warm_epochs", self.warm_epochs, 1, none_ok="no warm start")
        if self.cold_dims:  # [] is allowed: every smaller-d model warm-started
            _dims("train", "cold_dims", self.cold_dims)
        _int_at_least("train", "batch_size", self.batch_size, 1)
        _positive_float("train", "lr", self.lr)
        _share("train", "warmup", self.warmup, False, "use a share of the steps in (0, 1), e.g. "
               "OneCycleLR's 0.3")
        _share("train", "adam_beta2", self.adam_beta2, True, "use a number in [0, 1), e.g. 0.99 or the lecture's "
               "0.999")
        _int_at_least("train", "seed", self.seed, 0)
        _int_at_least("train", "eval_batch_size", self.eval_batch_size, 1)
        _int_at_least("train", "eval_subset", self.eval_subset, 1, none_ok="every epoch on the whole test set")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            _fail("train", "device", self.device, "use auto, cpu, cuda or cuda:N")


# The lecture's recipe (the `lecture` preset's [train], besides its 10 epochs): constant Adam 1e-3 (PyTorch's betas),
# batch 100, fp32, every model of a study from its own initial weights.
LECTURE_RECIPE = {"batch_size": 100, "lr": 1e-3, "adam_beta2": 0.999, "schedule": "constant", "lr_scaling": "none",
                  "precision": "fp32", "warm_epochs": None}
# What a record written before a train setting existed trained with: the value that setting's default had then.
TRAIN_BEFORE = {"schedule": "constant", "lr_scaling": "none", "precision": "fp32", "adam_beta2": 0.999,
                "warmup": 0.3, "warm_epochs": None, "eval_subset": None, "cold_dims": ()}


def lecture_train(**changes: Any) -> TrainConfig:
    """The lecture's recipe for 10 epochs; ``changes`` override fields (e.g. epochs=2 in a test of resume
    semantics)."""
    return TrainConfig(**{"epochs": 10, **LECTURE_RECIPE, **changes})


def _dims(section: str, name: str, dims: tuple[int, ...]) -> None:
    if not dims:
        _fail(section, name, list(dims), "give at least one latent size, e.g. [2, 8]")
    for d in dims:
        _int_at_least(section, name, d, 1)
    if len(set(dims)) != len(dims):
        _fail(section, name, list(dims), "each latent size once")


def parse_vae(text: str) -> tuple[float, tuple[int, ...]]:
    """'BETA@D1,D2,...' -> (beta, (d1, d2, ...)); e.g. '1@8,16,32' (VAEs) or '4@16' (a beta-VAE)."""
    try:
        beta_text, dims_text = text.split("@")
        beta, dims = float(beta_text), tuple(int(v) for v in dims_text.split(","))
    except ValueError:
        _fail("latent", "vaes", text, "each entry is BETA@D1,D2,... e.g. '1@8,16,32' or '4@16'")
    _positive_float("latent", "vaes (beta)", beta)
    _dims("latent", "vaes (dims)", dims)
    return beta, dims


@dataclass(frozen=True)
class SweepConfig:
    dims: tuple[int, ...] = _f((2, 4, 8, 16, 32), "Latent sizes of the CNN-vs-PCA sweep.")
    n_show: int = _f(36, "Test digits shown in each reconstruction figure.")

    def __post_init__(self) -> None:
        _dims("sweep", "dims", self.dims)
        _int_at_least("sweep", "n_show", self.n_show, 1)


@dataclass(frozen=True)
class LatentConfig:
    dims: tuple[int, ...] = _f((8, 16, 32), "Latent sizes of the sampling study (AEs shared with the sweep).")
    densities: tuple[str, ...] = _f(DENSITY_NAMES, "Densities fitted on training latents: diag (the lecture's), "
                                                   "full, gmm, flow.")
    vaes: tuple[str, ...] = _f(("1@8,16,32", "4@16"), "VAEs to train: BETA@D1,D2,... (beta 1: VAE).")
    n_samples: int = _f(5000, "Samples drawn and scored per row.")
    n_pairs: int = _f(6, "Interpolated test pairs (rows of the figure).")
    steps: int = _f(12, "Interpolation steps from a = 0 to 1 (columns).")
    gmm_components: int | None = _f(None, "GMM components (default: chosen by held-out likelihood, see "
                                          "aelab.latent.GMM).")
    flow_steps: int = _f(2000, "Optimisation steps of the RealNVP flow.")
    seed: int = _f(0, "Seed of the densities, samples and interpolation pairs.")

    def __post_init__(self) -> None:
        _dims("latent", "dims", self.dims)
        if not self.densities:
            _fail("latent", "densities", [], f"give at least one of {', '.join(DENSITY_NAMES)}")
        for name in self.densities:
            _one_of("latent", "densities", name, DENSITY_NAMES)
        for text in self.vaes:
            parse_vae(text)
        _int_at_least("latent", "n_samples", self.n_samples, 2)
        _int_at_least("latent", "n_pairs", self.n_pairs, 1)
        _int_at_least("latent", "steps", self.steps, 2)
        _int_at_least("latent", "gmm_components", self.gmm_components, 1, none_ok=True)
        _int_at_least("latent", "flow_steps", self.flow_steps, 1)
        _int_at_least("latent", "seed", self.seed, 0)

    @property
    def vae_models(self) -> tuple[tuple[float, tuple[int, ...]], ...]:
        return tuple(parse_vae(t) for t in self.vaes)


def parse_runs(text: str) -> tuple[int, int]:
    """'8x3' -> (d = 8, 3 seeds)."""
    try:
        d_text, n_text = text.split("x")
        d, n = int(d_text), int(n_text)
    except ValueError:
        _fail("decoders", "models", text, "each entry is DxSEEDS, e.g. '8x3' (d = 8, three seeds)")
    _int_at_least("decoders", "models (d)", d, 1)
    _int_at_least("decoders", "models (seeds)", n, 1)
    return d, n


@dataclass(frozen=True)
class DecodersConfig:
    families: tuple[str, ...] = _f(("transposed", "resize-nearest", "resize-bilinear", "pixel-shuffle",
                                    "pixel-shuffle-icnr"), "Decoder families compared (same encoder, same recipe).")
    models: tuple[str, ...] = _f(("8x3", "16x1"), "Latent sizes and seeds per family: DxSEEDS, e.g. 8x3.")
    n_train: int | None = _f(None, "Train the study's models on the first N images (default: data.n_train).")
    n_show: int = _f(6, "Test digits in the zoomed reconstruction figure.")
    init_specs: tuple[str, ...] = _f(("32:5:1,32:3:2,32:3:2,8:5:1",),
                                     "Other encoder specs whose untrained decoders are compared with the model's "
                                     "(the default ends the decoder with a kernel-3, stride-2 layer).")
    init_seeds: int = _f(5, "Initialisations averaged in the untrained-decoder comparison.")
    n_samples: int = _f(2000, "GMM samples decoded per model for its sample FID and spectrum.")
    cost_rounds: int = _f(8, "Interleaved timing rounds (3 training steps per family each) behind the "
                             "seconds-per-epoch column.")

    def __post_init__(self) -> None:
        from aelab.models.autoencoder import parse_spec
        from aelab.models.decoders import DECODERS

        for spec in self.init_specs:
            try:
                parse_spec(spec)
            except ConfigError as e:
                raise ConfigError(f"decoders.init_specs: {e}") from None
        _int_at_least("decoders", "init_seeds", self.init_seeds, 1)
        _int_at_least("decoders", "n_samples", self.n_samples, 2)
        _int_at_least("decoders", "cost_rounds", self.cost_rounds, 1)

        if not self.families:
            _fail("decoders", "families", [], f"give at least one of {', '.join(DECODERS)}")
        for name in self.families:
            _one_of("decoders", "families", name, tuple(DECODERS))
        if not self.models:
            _fail("decoders", "models", [], "give at least one DxSEEDS entry, e.g. 8x3")
        for text in self.models:
            parse_runs(text)
        _int_at_least("decoders", "n_train", self.n_train, 1, none_ok=True)
        _int_at_least("decoders", "n_show", self.n_show, 1)

    @property
    def runs(self) -> tuple[tuple[int, int], ...]:
        return tuple(parse_runs(t) for t in self.models)


RESTORE_CORRUPTIONS = ("noise:0.5", "saltpepper:0.2", "rect:0.25", "down:2", "down:4", "blur:1.5",
                       "rect:0.15+noise:0.2")
RESTORE_LEVELS = ("noise:0.25", "noise:0.5", "noise:0.75", "noise-raw:0.5", "saltpepper:0.1", "saltpepper:0.2",
                  "saltpepper:0.4", "rect:0.15", "rect:0.25", "rect:0.4", "down:2", "down:4", "blur:1", "blur:1.5",
                  "blur:2.5", "rect:0.15+noise:0.2")


def _corruptions(name: str, values: tuple[str, ...], allow_blind: bool = False) -> None:
    from aelab.corruptions import parse

    if not values:
        _fail("restore", name, [], "give at least one corruption, e.g. [\"noise:0.5\"]")
    for text in values:
        if text == "blind" and not allow_blind:
            _fail("restore", name, text, "blind is its own model: set restore.blind = true")
        try:
            parse(text)
        except ConfigError as e:
            raise ConfigError(f"restore.{name}: {e}") from None
    if len(set(values)) != len(values):
        _fail("restore", name, list(values), "each corruption once")


@dataclass(frozen=True)
class RestoreConfig:
    datasets: tuple[str, ...] = _f((), "Datasets of the restoration study (default: data.name only).")
    corruptions: tuple[str, ...] = _f(RESTORE_CORRUPTIONS, "One specialised restoring autoencoder per corruption "
                                                           "(aelab.corruptions syntax).")
    blind: bool = _f(True, "Also train the blind restorer (each image gets one corruption of every kind at random).")
    levels: tuple[str, ...] = _f(RESTORE_LEVELS, "Corruptions and levels every method is scored on.")
    d: int = _f(32, "Latent channels of the restoring autoencoders.")
    epochs: int | None = _f(None, "Training epochs of each restorer (default: train.epochs).")
    n_train: int | None = _f(None, "Train restorers on the first N images (default: data.n_train).")
    n_test: int | None = _f(None, "Score on the first N test images (default: all).")
    n_val: int = _f(500, "Held-out training images (the last N) on which each baseline's parameter is chosen.")
    n_show: int = _f(36, "Test digits in each restoration figure (rows: corrupted, each method, clean).")

    def __post_init__(self) -> None:
        from aelab.data import SOURCES

        for name in self.datasets:
            _one_of("restore", "datasets", name, sorted(SOURCES))
        _corruptions("corruptions", self.corruptions)
        _corruptions("levels", self.levels)
        _int_at_least("restore", "d", self.d, 1)
        _int_at_least("restore", "epochs", self.epochs, 1, none_ok=True)
        _int_at_least("restore", "n_train", self.n_train, 1, none_ok=True)
        _int_at_least("restore", "n_test", self.n_test, 1, none_ok=True)
        _int_at_least("restore", "n_val", self.n_val, 10)
        _int_at_least("restore", "n_show", self.n_show, 1)


@dataclass(frozen=True)
class OpsConfig:
    kernel: int = _f(4, "Kernel of the checkerboard study (coverage maps, upsamplers).")
    strides: tuple[int, ...] = _f((2, 3), "Strides of the checkerboard study.")
    seed: int = _f(0, "Seed of the random upsampler weights.")

    def __post_init__(self) -> None:
        _int_at_least("ops", "kernel", self.kernel, 1)
        _dims("ops", "strides", self.strides)
        _int_at_least("ops", "seed", self.seed, 0)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    decoders: DecodersConfig = field(default_factory=DecodersConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    preset: str = "default"


SECTIONS = {f.name: f.type for f in fields(Config) if f.name != "preset"}
SECTION_CLASSES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "sweep": SweepConfig,
                   "latent": LatentConfig, "decoders": DecodersConfig, "restore": RestoreConfig, "ops": OpsConfig}


# --------------------------------------------------------------------------- dict <-> dataclass
def to_dict(cfg) -> dict[str, Any]:
    """A JSON/TOML-able dict of a config (tuples become lists)."""
    def plain(v):
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


def _coerce(path: str, value: Any, tp) -> Any:
    """``value`` (from TOML or --set) as type ``tp``, or a ConfigError naming the key."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(path, value, inner[0])
    if origin is tuple:
        if isinstance(value, str):  # --set sweep.dims=2,8,32; --set latent.vaes=1@8,16,4@16 (a comma starts
            # a new entry only where a new BETA@ follows)
            parts = re.split(r",(?=[^,@]*@)", value) if "@" in value else value.split(",")
            value = [v.strip() for v in parts if v.strip()]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]  # --set latent.dims=4: a list of one
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} = {value!r} is not allowed: use a list, e.g. [2, 8] or 2,8")
        return tuple(_coerce(path, v, args[0]) for v in value)
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{path} = {value!r} is not allowed: use true or false")
        return value
    if tp in (int, float):
        if isinstance(value, str):
            try:
                value = tp(value)
            except ValueError:
                pass
        ok = (int,) if tp is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok):
            raise ConfigError(f"{path} = {value!r} is not allowed: use {'an integer' if tp is int else 'a number'}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} = {value!r} is not allowed: use a string")
        return value
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")  # pragma: no cover


def build_section(cls, values: dict[str, Any], section: str):
    """``cls(**values)`` after checking every key exists and coercing every value to its field's type."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key}; {section} has: {', '.join(sorted(known))}")
    return cls(**{k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in values.items()})


def merge(base: dict[str, Any], override: dict[str, Any], where: str) -> dict[str, Any]:
    """``base`` with ``override`` applied section by section; unknown sections are refused."""
    out = {k: dict(v) for k, v in base.items()}
    for section, values in override.items():
        if section not in SECTION_CLASSES:
            raise ConfigError(f"unknown section [{section}] in {where}; sections: {', '.join(SECTION_CLASSES)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] in {where} must be a table of keys, got {values!r}")
        out.setdefault(section, {}).update(values)
    return out


def from_dict(values: dict[str, Any], preset: str = "custom") -> Config:
    """The inverse of ``to_dict``: a Config from {section: {key: value}} (and an optional "preset" name)."""
    values = dict(values)
    preset = values.pop("preset", preset)
    for section in values:
        if section not in SECTION_CLASSES:
            raise ConfigError(f"unknown section {section!r}; sections: {', '.join(SECTION_CLASSES)}")
    return Config(**{s: build_section(cls, values.get(s, {}), s) for s, cls in SECTION_CLASSES.items()},
                  preset=preset)


# --------------------------------------------------------------------------- presets, files, --set
def presets() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("aelab").joinpath("configs").iterdir()
                  if p.name.endswith(".toml"))


def read_toml(path: str | Path, what: str | None = None) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path} ({e.strerror if isinstance(e, OSError) else e}); "
                          "give a readable UTF-8 TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {what or path} is not valid TOML ({e}); fix the file") from None


def preset_values(name: str) -> dict[str, Any]:
    if name not in presets():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(presets())}")
    ref = resources.files("aelab").joinpath("configs", f"{name}.toml")
    with resources.as_file(ref) as path:
        return read_toml(path, f"preset {name}")


def parse_set(item: str) -> tuple[str, str, Any]:
    """'train.lr=3e-3' -> ('train', 'lr', 0.003); the value is read as TOML, else taken as a plain string."""
    key, sep, text = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ConfigError(f"--set {item!r}: use section.key=value, e.g. --set train.lr=3e-3")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return section, name, value


def resolve(preset: str = "default", file: str | Path | None = None, sets: typing.Iterable[str] = (),
            overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults <- preset <- TOML file <- --set items <- ``overrides`` (the CLI's shortcut options)."""
    values: dict[str, dict[str, Any]] = {}
    values = merge(values, preset_values(preset), f"preset {preset}")
    if file is not None:
        values = merge(values, read_toml(file), str(file))
    for item in sets:
        section, name, value = parse_set(item)
        values = merge(values, {section: {name: value}}, f"--set {item}")
    values = merge(values, overrides or {}, "the command line")
    return from_dict(values, preset)


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML (what ``aelab reproduce --dry-run`` prints; readable by ``--config``)."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"# preset: {cfg.preset}"]
    for section, values in to_dict(cfg).items():
        if section == "preset":
            continue
        lines.append(f"\n[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {value(v)}" if v is not None else f"# {k} = none (unset)")
    return "\n".join(lines) + "\n"


def override(cfg: Config, section: str, **values: Any) -> Config:
    """A copy of ``cfg`` with ``values`` set in ``section`` (coerced and validated like any other setting)."""
    current = to_dict(getattr(cfg, section))
    return dataclasses.replace(cfg, **{section: build_section(SECTION_CLASSES[section], {**current, **values},
                                                              section)})
