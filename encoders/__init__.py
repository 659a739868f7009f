"""Backbones and projection heads: `build_encoder`, `build_head`, `SimCLRModel`."""

from fastclr.encoders._build import (
    HEADS,
    EncoderError,
    SimCLRModel,
    SmallCNN,
    build_classifier,
    build_encoder,
    build_head,
    encoder_names,
    load_state_dict_file,
)

__all__ = [
    "HEADS",
    "EncoderError",
    "SimCLRModel",
    "SmallCNN",
    "build_classifier",
    "build_encoder",
    "build_head",
    "encoder_names",
    "load_state_dict_file",
]
