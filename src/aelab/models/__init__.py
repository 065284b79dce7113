"""nn.Modules only: no files, no losses, no training loops."""

from aelab.models.autoencoder import LECTURE_SPEC, AutoEncoder, ConvSpec, parse_spec
from aelab.models.vae import VAE

# model name -> class; every class takes (d, spec, in_channels, image_size, **options)
MODELS = {"ae": AutoEncoder, "vae": VAE}

__all__ = ["LECTURE_SPEC", "MODELS", "VAE", "AutoEncoder", "ConvSpec", "parse_spec"]
