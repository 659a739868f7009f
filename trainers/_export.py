"""A trained encoder outside fastclr: the preprocessing it expects, and a folder timm loads by itself.

An encoder folder (encoder.safetensors + encoder.json, trainers/_encoder_file.py) holds the weights
of a timm ResNet, or of fastclr's small digit CNN, and what they were trained on: the architecture,
the CIFAR stem, the channels, the image side, and the mean and std of the pretraining images.

    from fastclr.trainers import load_encoder, preprocessing
    encoder, info = load_encoder("runs/pretrain")           # a torch module, frozen, in eval mode
    features = encoder(preprocessing(info)(image)[None])    # a PIL image -> (1, num_features)

    fastclr export-timm --encoder runs/pretrain --out exported
    model = timm.create_model("local-dir:exported", pretrained=True)  # weights and preprocessing
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))

timm has no ResNet with fastclr's CIFAR stem (a 3x3 stride-1 first conv, no max-pool): such an
encoder is built with `pretrained=False`, given that stem, then loaded (`timm.models.load_checkpoint`),
as `export-timm` says when it writes one. docs/encoder.md has every path, and one needing only timm
and safetensors.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import safetensors.torch

from fastclr.config import check_settings
from fastclr.files import write_atomic
from fastclr.pipelines import val_crop_fraction, val_transform
from fastclr.trainers._encoder_file import load_encoder
from fastclr.trainers._errors import EvalError
from fastclr.trainers._eval_config import ExportTimmConfig
from fastclr.trainers._lock import writes_out

CIFAR_STEM_STEPS = (
    "timm builds ResNets with the ImageNet stem: create the model with pretrained=False, set "
    "model.conv1 = torch.nn.Conv2d({in_chans}, {width}, 3, 1, 1, bias=False) and model.maxpool = "
    "torch.nn.Identity(), then timm.models.load_checkpoint(model, '{weights}')"
)


def normalisation(info: dict) -> tuple[list[float], list[float]]:
    """The mean and std (per input channel, of [0, 1] pixels) of the images the encoder was trained on,
    spread over its channels as the loaders do (a gray set's one value for each of three)."""
    if "mean" not in info or "std" not in info:
        raise EvalError(
            f"encoder {info.get('encoder')}: its encoder.json records no mean and std (an encoder made "
            "by import-weights); normalise with the statistics of your images (`fastclr shards info`)"
        )
    mean, std, channels = list(info["mean"]), list(info["std"]), info["in_chans"]
    if len(mean) != channels:
        mean, std = mean[:1] * channels, std[:1] * channels
    return mean, std


def timm_data_config(info: dict) -> dict:
    """timm's preprocessing keys (`input_size`, `mean`, `std`, `crop_pct`, ...) for an encoder's
    encoder.json: the val view of fastclr's pipelines, so `timm.data.create_transform(**config)` feeds it
    as fastclr's evaluations do."""
    mean, std = normalisation(info)
    size = info["image_size"]
    fraction = val_crop_fraction(size)
    resized = round(size / fraction)  # the shorter side before the crop, as fastclr rounds it
    if resized != size / fraction:  # timm floors size / crop_pct: aim between resized and resized + 1
        fraction = size / (resized + 0.5)
    return {
        "input_size": (info["in_chans"], size, size),
        "interpolation": "bilinear",
        "mean": tuple(mean),
        "std": tuple(std),
        "crop_pct": fraction,
        "crop_mode": "center",
    }


def preprocessing(info: dict):
    """The transform of a PIL image (or a uint8 CHW tensor) into the encoder's input: its channels
    (RGB, or gray for a one-channel encoder), the shorter side resized and centre-cropped to
    `image_size`, scaled to [0, 1] and normalised with the pretraining images' mean and std.
    `info` is encoder.json (the second value `load_encoder` returns)."""
    from torchvision.transforms import v2

    mean, std = normalisation(info)
    channels = v2.RGB() if info["in_chans"] == 3 else v2.Grayscale(num_output_channels=1)
    return v2.Compose([channels, v2.ToImage(), *val_transform(info["image_size"], mean, std).transforms])


@writes_out("export-timm")
def export_timm(cfg: ExportTimmConfig) -> Path:
    """Write `cfg.out` as timm's own folder layout (model.safetensors + config.json, as timm's
    `save_for_hf` writes it) for the encoder `cfg.encoder`: `timm.create_model("local-dir:OUT",
    pretrained=True)` then rebuilds it, weights loaded strictly and the preprocessing in its
    `pretrained_cfg`. Returns config.json. A CIFAR-stem encoder needs the steps in CIFAR_STEM_STEPS."""
    from timm.models._hub import save_config_for_hf

    check_settings(cfg)
    encoder, info = load_encoder(cfg.encoder)
    if info["encoder"] == "small_cnn":
        raise EvalError(
            f"{cfg.encoder}: small_cnn is fastclr's own network, not a timm model; load it with "
            "fastclr.trainers.load_encoder (docs/encoder.md)"
        )
    data = timm_data_config(info)
    out = Path(cfg.out)
    # the description of these weights, not timm's ImageNet tag, licence and paper for the architecture
    defaults = encoder.pretrained_cfg
    encoder.pretrained_cfg = {
        "architecture": info["encoder"],
        "tag": "fastclr",
        "num_classes": 0,
        **{k: defaults[k] for k in ("first_conv", "classifier", "pool_size") if k in defaults},
        **data,
    }
    described = {
        "encoder_sha256": info["sha256"],
        "cifar_stem": info["cifar_stem"],
        "pretrained_on": info.get("pretrained_on"),
    }
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    if info["cifar_stem"]:
        width = state["conv1.weight"].shape[0]
        described["load"] = CIFAR_STEM_STEPS.format(
            in_chans=info["in_chans"], width=width, weights="model.safetensors"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "model.safetensors", safetensors.torch.save(state))
        with tempfile.TemporaryDirectory() as scratch:  # timm writes the file; fastclr writes it whole
            save_config_for_hf(
                encoder, f"{scratch}/config.json", model_config={"fastclr": described}, data_config=data
            )
            config = json.loads(Path(scratch, "config.json").read_text())
        write_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    except OSError as err:
        raise EvalError(f"{err.filename or out}: cannot write ({err.strerror or err})") from None
    return out / "config.json"
