"""Warm start: a model of one latent size begins from a trained model of another.

Across the study's latent sizes the lecture's architecture differs only in the two layers at the latent, the
encoder's last and the decoder's first, whose channel counts are d.  Every other layer has the same shape at every
d, so a model at a small d can begin with the convolutions a model at a large d has already learnt, and learn its
own code in fewer epochs (docs/benchmarks.md, "The study's models warm-started").
"""

from __future__ import annotations

from torch import nn

from aelab.errors import ConfigError


def latent_layers(model: nn.Module) -> tuple[str, str]:
    """The module names of the two layers at the latent: the encoder's last and the decoder's first layer with
    weights (``encoder.8``, ``decoder.0`` for the lecture's spec)."""
    first = next(i for i, m in enumerate(model.decoder) if next(m.parameters(), None) is not None)
    return f"encoder.{len(model.encoder) - 1}", f"decoder.{first}"


def warm_start_(model: nn.Module, source: nn.Module) -> list[str]:
    """Copy into ``model`` every weight of ``source`` of the same name and shape; return the names ``model`` keeps
    from its own initial weights: those of the layers at the latent whose shape depends on d (none when d is
    the same).  Raises ConfigError when the two are other architectures: other layers, or a shape that differs
    outside the layers at the latent."""
    own, theirs = model.state_dict(), source.state_dict()
    if own.keys() != theirs.keys():
        missing = sorted(set(own) ^ set(theirs))
        raise ConfigError(f"cannot warm-start a {type(model).__name__} from a {type(source).__name__} with other "
                          f"layers ({', '.join(missing[:4])}); start from a model of the same kind, spec and decoder")
    at_latent = tuple(f"{name}." for name in latent_layers(model))
    kept = [k for k in own if own[k].shape != theirs[k].shape]
    outside = [k for k in kept if not k.startswith(at_latent)]
    if outside:
        raise ConfigError(f"cannot warm-start from a model whose layer {outside[0]} has shape "
                          f"{tuple(theirs[outside[0]].shape)}, not {tuple(own[outside[0]].shape)}: only the layers "
                          f"at the latent ({', '.join(n for n in latent_layers(model))}) may differ; use the same spec")
    model.load_state_dict({k: own[k] if k in kept else theirs[k] for k in own})  # copies into model's own tensors
    return kept
