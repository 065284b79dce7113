"""nn.Modules only: no files, no losses, no training loops."""

from aelab.models.autoencoder import INITS, LECTURE_SPEC, AutoEncoder, ConvSpec, kaiming_init_, parse_spec
from aelab.models.vae import VAE

# model name -> class; every class takes (d, spec, in_channels, image_size, **options)
MODELS = {"ae": AutoEncoder, "vae": VAE}

__all__ = ["INITS", "LECTURE_SPEC", "MODELS", "VAE", "AutoEncoder", "ConvSpec", "kaiming_init_", "parse_spec"]
