"""nn.Modules only: no files, no losses, no training loops."""

from aelab.models.autoencoder import LECTURE_SPEC, AutoEncoder, ConvSpec, parse_spec

__all__ = ["LECTURE_SPEC", "AutoEncoder", "ConvSpec", "parse_spec"]
