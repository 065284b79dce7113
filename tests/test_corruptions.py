"""Corruptions against closed forms and independent implementations: noise statistics, salt-and-pepper
rates, the occluded area, block means under down-sampling, scipy's Gaussian filter; seeded; bad specs named."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from aelab.cli import main
from aelab.corruptions import SHOWCASE, parse
from aelab.errors import ConfigError


@pytest.fixture
def x():
    return torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_raw_noise_has_the_stated_sigma_and_clipped_noise_stays_in_range(x):
    d = parse("noise-raw:0.3")(x, seed=1) - x
    assert abs(float(d.mean())) < 0.005 and float(d.std()) == pytest.approx(0.3, rel=0.01)
    y = parse("noise:0.3")(x, seed=1)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, (x + d).clamp(0, 1))  # clipping is the only difference, same draws


def test_salt_and_pepper_hits_the_stated_share_with_zeros_and_ones(x):
    y = parse("saltpepper:0.2")(x, seed=2)
    changed = y != x
    assert float(changed.float().mean()) == pytest.approx(0.2, abs=0.01)
    assert set(torch.unique(y[changed]).tolist()) <= {0.0, 1.0}


def test_rectangle_covers_the_stated_share(x):
    y = parse("rect:0.25")(x + 0.5, seed=3)   # no pixel is 0 before, so zeros are exactly the rectangle
    shares = (y == 0).float().flatten(1).mean(1)
    assert torch.allclose(shares, torch.full_like(shares, 0.25), atol=1.5 / 28)


@pytest.mark.parametrize("k", [2, 4])
def test_down_sampling_keeps_block_means_and_is_constant_on_blocks(x, k):
    y = parse(f"down:{k}")(x)
    blocks = lambda t: t.reshape(200, 1, 28 // k, k, 28 // k, k)  # noqa: E731
    assert torch.allclose(blocks(y).mean((3, 5)), blocks(x).mean((3, 5)), atol=1e-6)
    assert float(blocks(y).std((3, 5)).max()) < 1e-6


def test_blur_is_scipys_gaussian_filter(x):
    y = parse("blur:1.5")(x[:3])
    ref = np.stack([gaussian_filter(im[0].double().numpy(), 1.5, mode="nearest") for im in x[:3]])
    assert np.allclose(y[:, 0].numpy(), ref, atol=1e-6)


def test_chains_apply_left_to_right_and_seeds_reproduce(x):
    chain = parse("rect:0.2+noise:0.1")
    assert torch.equal(chain(x, seed=5), chain(x, seed=5)) and not torch.equal(chain(x, seed=5), chain(x, seed=6))
    assert str(chain) == "rect:0.2+noise:0.1"
    first = parse("rect:0.2")(x, seed=5)
    assert (chain(x, seed=5)[first == 0] != 0).any()  # the noise comes after the occlusion


@pytest.mark.parametrize("text,named", [("gauss:0.5", "unknown corruption 'gauss'"), ("noise:2", "sigma in (0, 1]"),
                                        ("noise", "sigma in (0, 1]"), ("down:3", "factor 2 or 4"),
                                        ("saltpepper:1", "p in (0, 1)"), ("rect:x", "share in (0, 1)"),
                                        ("", "empty corruption")])
def test_bad_corruptions_name_the_corruption_and_its_range(text, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        parse(text)


def test_restore_corrupt_shows_each_corruption_on_the_lectures_36_digits(tmp_path, capsys, mnist_test):
    out = tmp_path / "corrupt.png"
    assert main(["restore", "corrupt", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 10_000 and all(c in text for c in SHOWCASE)
    assert main(["restore", "corrupt", "--corruption", "blur:9", "--out", str(out)]) == 2


def test_blind_mixture_gives_each_image_one_of_the_kinds(x):
    from aelab.corruptions import BLIND

    y = parse("blind")(x, seed=0)
    assert y.shape == x.shape and str(parse("blind")) == "blind" and len(BLIND) >= 6
    assert not torch.equal(y, x) and torch.equal(y, parse("blind")(x, seed=0))


def test_a_restorer_learns_to_denoise_and_restores_a_folder(tmp_path, capsys, mnist_test):
    from PIL import Image

    out = tmp_path / "den"
    # 120 steps of batch 50 (on a Zen 1, seed 0: 13.2 against 11.0 dB, digit kept 0.40 against 0.25 corrupted);
    # 100 steps of batch 100 on 5000 digits gave 12.8 dB and 0.29 in a third more time
    assert main(["restore", "train", "--preset", "lecture", "--corruption", "noise:0.4", "--n-train", "3000",
                 "--epochs", "2", "--set", "train.batch_size=50", "--set", "data.n_test=2000", "--out", str(out),
                 "--quiet"]) == 0
    import json

    m = json.loads((out / "metrics.json").read_text())
    assert m["restored"]["psnr"] > m["corrupted"]["psnr"] + 1      # a real gain in dB over the noisy input
    assert m["restored"]["class_kept"] > m["corrupted"]["class_kept"]
    # restore a folder of the user's images: one is not an image, it is reported and the others restored
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(mnist_test.images[i, 0]).save(src / f"d{i}.png")
    (src / "broken.png").write_text("not a png")
    capsys.readouterr()
    assert main(["restore", "apply", "--run", str(out), "--in", str(src), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "broken.png" in err and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["d0.png", "d1.png",
                                                                                        "d2.png"]
    assert main(["restore", "train", "--corruption", "noise:7", "--out", str(tmp_path / "bad")]) == 2
