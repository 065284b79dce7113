"""The autoencoder against the lecture's slides (printed layers, tensor sizes) and PyTorch's size rules."""

import pytest
import torch

from aelab.errors import ConfigError
from aelab.models import AutoEncoder, ConvSpec, parse_spec
from aelab.models.summary import layer_table

# The slide "deep autoencoders: an example with MNIST", layer by layer.
SLIDE_ENCODER = [
    "Conv2d(1, 32, kernel_size=(5, 5), stride=(1, 1))", "ReLU", "Conv2d(32, 32, kernel_size=(5, 5), stride=(1, 1))",
    "ReLU", "Conv2d(32, 32, kernel_size=(4, 4), stride=(2, 2))", "ReLU",
    "Conv2d(32, 32, kernel_size=(3, 3), stride=(2, 2))", "ReLU", "Conv2d(32, 8, kernel_size=(4, 4), stride=(1, 1))",
]
SLIDE_DECODER = [
    "ConvTranspose2d(8, 32, kernel_size=(4, 4), stride=(1, 1))", "ReLU",
    "ConvTranspose2d(32, 32, kernel_size=(3, 3), stride=(2, 2))", "ReLU",
    "ConvTranspose2d(32, 32, kernel_size=(4, 4), stride=(2, 2))", "ReLU",
    "ConvTranspose2d(32, 32, kernel_size=(5, 5), stride=(1, 1))", "ReLU",
    "ConvTranspose2d(32, 1, kernel_size=(5, 5), stride=(1, 1))",
]
# The slides "Tensor sizes / operations".
SLIDE_SIZES = [(1, 28, 28), (32, 24, 24), (32, 20, 20), (32, 9, 9), (32, 4, 4), (8, 1, 1),
               (32, 4, 4), (32, 9, 9), (32, 20, 20), (32, 24, 24), (1, 28, 28)]


def _layers(seq):
    return [("ReLU" if isinstance(m, torch.nn.ReLU) else repr(m)) for m in seq]


def test_print_is_the_slide():
    model = AutoEncoder(d=8)
    assert _layers(model.encoder) == SLIDE_ENCODER and _layers(model.decoder) == SLIDE_DECODER
    assert all(m.inplace for m in model.modules() if isinstance(m, torch.nn.ReLU))


def test_size_table_is_the_slide_and_macs_follow_the_closed_form():
    rows = layer_table(AutoEncoder(d=8), (1, 28, 28))
    assert [rows[0].in_shape] + [r.out_shape for r in rows] == SLIDE_SIZES
    for r in rows:
        (ci, hi, wi), (co, ho, wo) = r.in_shape, r.out_shape
        k = int(r.layer.split("kernel_size=(")[1].split(",")[0])
        # conv: one k*k*C_in inner product per output; transposed conv: one k*k*C_out kernel copy per input
        expected = ho * wo * co * ci * k * k if r.layer.startswith("Conv2d") else hi * wi * ci * co * k * k
        assert r.macs == expected
        assert r.params == ci * co * k * k + co
    # the brief's check: one epoch of 60000 images, forward + backward ~ 3x forward, is ~8.7 TFLOP
    assert 3 * 2 * sum(r.macs for r in rows) * 60000 / 1e12 == pytest.approx(8.77, abs=0.01)


@pytest.mark.parametrize("d", [2, 4, 8, 16, 32])
def test_latent_is_d_by_1_by_1(d):
    model = AutoEncoder(d)
    x = torch.rand(3, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (3, d) and model.decode(z).shape == x.shape


# The decoder's size rule for random specs (every decoder family): tests/test_decoders.py.


def test_spec_parsing_and_errors():
    assert parse_spec("32:5:1, 8:4:2:1") == (ConvSpec(32, 5, 1), ConvSpec(8, 4, 2, 1))
    with pytest.raises(ConfigError, match="layer 1"):
        parse_spec("32:5:1,abc")
    with pytest.raises(ConfigError, match=">= 1"):
        parse_spec("32:0:1")
    with pytest.raises(ConfigError, match="3 or 4 integers"):  # a 2-field layer: stride is not optional
        parse_spec("32:5")
    with pytest.raises(ConfigError, match="empty"):
        parse_spec(" , ")
    with pytest.raises(ConfigError, match="encoder layer 4 .*2x2 input .*smaller than the kernel"):
        AutoEncoder(8, image_size=20)
    with pytest.raises(ConfigError, match=r"z of shape \(N, 8\)"):
        AutoEncoder(8).decode(torch.zeros(2, 4))


def test_kaiming_init_draws_each_layer_at_its_fan_and_lets_the_input_through():
    from aelab.config import ModelConfig
    from aelab.experiments import build_model

    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # not the global RNG's leftovers
    spread = {}
    for init in ("pytorch", "kaiming"):
        model = build_model(ModelConfig(d=8, init=init), (1, 28, 28), seed=0)
        with torch.no_grad():
            spread[init] = float(model.decode(model.encode(x)).std(0).mean())  # how much the output varies with x
        if init == "kaiming":
            for m in model.modules():
                if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                    # He et al.: N(0, 2 / fan), fan = input channels x kernel area (the weight's dims 1 / 0 for a
                    # convolution / transposed convolution)
                    fan = m.weight.shape[1 if isinstance(m, torch.nn.Conv2d) else 0] * m.weight[0, 0].numel()
                    assert float(m.weight.detach().std()) == pytest.approx((2 / fan) ** 0.5, rel=0.25)
                    assert not m.bias.any()
            again = build_model(ModelConfig(d=8, init=init), (1, 28, 28), seed=0)
            assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                         strict=True))
    # PyTorch's default draws a third of He's variance per layer: after ten layers the output hardly depends on
    # the input (about 5e-6 of a pixel), He's keeps about 2000 times more of it (about 1e-2, the input's own 0.29;
    # 0.0098 to 0.0106 over six draws of x, so the bound is not 1e-2 itself)
    assert spread["pytorch"] < 1e-4 and spread["kaiming"] > 5e-3 and spread["kaiming"] > 1000 * spread["pytorch"]


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_warm_start_copies_every_layer_but_those_at_the_latent(kind):
    from aelab.models import MODELS
    from aelab.models.warm import warm_start_

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        source, model = MODELS[kind](32), MODELS[kind](8)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    kept = warm_start_(model, source)
    # only the encoder's last and the decoder's first layer have shapes that depend on d (a VAE's encoder gives
    # 2d channels); their bias too where its length is d
    assert kept == ["encoder.8.weight", "encoder.8.bias", "decoder.0.weight"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh[k] if k in kept else source.state_dict()[k]), k
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the features under the latent are the source's; so is the decoder above its first layer
        assert torch.equal(model.encoder[:-1](x), source.encoder[:-1](x))
        h = torch.rand(5, 32, 4, 4, generator=torch.Generator().manual_seed(2))
        assert torch.equal(model.decoder[1:](h), source.decoder[1:](h))
    # the weights are copies: training the warm-started model leaves its source as it was
    model.encoder[0].weight.data.add_(1.0)
    assert not torch.equal(model.encoder[0].weight, source.encoder[0].weight)


def test_warm_start_refuses_another_architecture():
    from aelab.models import VAE
    from aelab.models.warm import warm_start_

    with pytest.raises(ConfigError, match="same kind, spec and decoder"):
        warm_start_(AutoEncoder(8), AutoEncoder(8, decoder="resize-bilinear"))
    with pytest.raises(ConfigError, match="only the layers at the latent"):
        warm_start_(AutoEncoder(8), AutoEncoder(8, parse_spec("16:5:1,32:5:1,32:4:2,32:3:2,8:4:1")))
    # the same layers at the same d: everything is copied but a VAE's last encoder layer (2d channels)
    assert warm_start_(AutoEncoder(8), AutoEncoder(8)) == []
    assert warm_start_(VAE(8), AutoEncoder(8)) == ["encoder.8.weight", "encoder.8.bias"]
