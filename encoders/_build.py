"""Backbones (any timm ResNet, the small digit CNN) and projection heads.

    encoder = build_encoder("resnet18", cifar_stem=True, pretrained_file="resnet18.pth")
    head = build_head("mlp_bn", encoder.num_features, hidden_dim=512, out_dim=128)

An encoder maps images to a feature vector (`encoder.num_features` wide), with
no classifier. Nothing is downloaded: ImageNet weights come from a local file.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from timm.models import clean_state_dict, load_state_dict
from torch import nn


class EncoderError(Exception):
    """A wrong encoder name, head or weights file, phrased as what to fix."""


class SmallCNN(nn.Module):
    """The digit encoder (launch/configs/a1_mnist_6k_labels.yaml): two conv layers, then a fully
    connected layer to 128."""

    def __init__(self, in_chans: int = 1, width: int = 32, num_features: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),  # any input size -> 4x4, so the FC layer is size-independent
        )
        self.fc = nn.Linear(2 * width * 16, num_features)
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(self.features(x).flatten(1)))


def _small_cnn(in_chans: int, cifar_stem: bool) -> nn.Module:
    return SmallCNN(in_chans)


def _timm(name: str) -> Callable[[int, bool], nn.Module]:
    def build(in_chans: int, cifar_stem: bool) -> nn.Module:
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
        if cifar_stem:  # 3x3 stride-1 first conv, no max-pool: keeps 32 px images at 32x32
            model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
            model.maxpool = nn.Identity()
        return model

    return build


def encoder_names() -> list[str]:
    return ["small_cnn", *timm.list_models("resnet*")]


def _factory(name: str) -> Callable[[int, bool], nn.Module]:
    if name == "small_cnn":
        return _small_cnn
    if name in timm.list_models("resnet*"):
        return _timm(name)
    near = [n for n in encoder_names() if n.startswith(name[:6])][:8]
    raise EncoderError(
        f"unknown encoder {name!r}; use small_cnn or a timm ResNet such as resnet18, "
        f"resnet34, resnet50{' (close: ' + ', '.join(near) + ')' if near else ''}"
    )


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from .safetensors, or .pth/.pt/.bin read with only tensors allowed (no pickled code):
    timm's loader, which also unwraps `state_dict` / `model` and drops `module.` and `_orig_mod.`
    (DDP, torch.compile) prefixes."""
    path = Path(path)
    if not path.is_file():
        raise EncoderError(
            f"pretrained file {path}: not found; name a local torchvision or timm weights file"
        )
    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a weights file we can read safely"
        if isinstance(err.__cause__, pickle.UnpicklingError):  # a global refused: it could run any code
            raise EncoderError(
                f"pretrained file {path}: holds pickled Python objects besides tensors; refusing to load "
                "them (convert it to .safetensors where you trust it)"
            ) from None
        reason = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
        raise EncoderError(
            f"pretrained file {path}: not a readable state dict ({(reason or ['?'])[0][:200]})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("module"), dict):  # DeepSpeed's wrapper
        state = clean_state_dict(state["module"])
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderError(f"pretrained file {path}: holds no tensor state dict")
    return state


def load_pretrained(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load matching weights (prefixes like `module.` stripped, classifier dropped); report the rest."""
    state = load_state_dict_file(path)
    for prefix in ("backbone.", "encoder."):  # solo-learn's and our own SimCLRModel's
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    own = model.state_dict()
    loadable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    report = {
        "loaded": sorted(loadable),
        "shape_mismatch": sorted(k for k in state if k in own and own[k].shape != state[k].shape),
        "unused": sorted(k for k in state if k not in own),
        "missing": sorted(k for k in own if k not in loadable),
    }
    if not loadable:
        raise EncoderError(
            f"pretrained file {path}: no key matches this encoder (first keys: "
            f"{', '.join(list(state)[:3])}); is it weights of another architecture?"
        )
    model.load_state_dict(loadable, strict=False)
    return report


def build_encoder(
    name: str, cifar_stem: bool = False, pretrained_file: str | Path | None = None, in_chans: int = 3
) -> nn.Module:
    """A feature extractor (`num_features` wide output); `load_report` says which weights matched.

    Args:
        name: `small_cnn` or any timm ResNet (`resnet18`, `resnet34`, `resnet50`, ...).
        cifar_stem: 3x3 stride-1 first conv and no max-pool (for 32 px images).
        pretrained_file: a local torchvision or timm state dict; keys that do not fit are reported.
        in_chans: input channels (1 for MNIST and digits).
    """
    model = _factory(name)(in_chans, cifar_stem)
    model.load_report = load_pretrained(model, pretrained_file) if pretrained_file else None
    return model


def build_classifier(
    name: str,
    num_classes: int,
    cifar_stem: bool = False,
    pretrained_file: str | Path | None = None,
    in_chans: int = 3,
    img_size: int = 224,
) -> nn.Module:
    """A whole classifier for supervised baselines: small_cnn, a timm ResNet, or any timm model (vgg11, vit).

    ViTs get `img_size` and a patch of img_size / 8 (4 px at 32 px), so small images still make 64 patches.
    A local weights file initialises every matching tensor; the classifier layer is replaced.
    """
    if name == "small_cnn" or name in timm.list_models("resnet*"):
        encoder = build_encoder(name, cifar_stem, pretrained_file, in_chans)
        return nn.Sequential(encoder, nn.Linear(encoder.num_features, num_classes))
    if name not in timm.list_models():
        raise EncoderError(
            f"unknown model {name!r}; use small_cnn or a timm model such as resnet18, vgg11, "
            "vit_small_patch16_224"
        )
    extra = {"img_size": img_size, "patch_size": max(1, img_size // 8)} if name.startswith("vit") else {}
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **extra)
    if pretrained_file:
        model.load_report = load_pretrained(model, pretrained_file)
    return model


HEADS = ("mlp_bn", "mlp_no_bn", "linear", "none")


def build_head(kind: str, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> nn.Module:
    """SimCLR projection head: `mlp_bn` (the paper's), `mlp_no_bn`, `linear` or `none` (identity)."""
    if kind == "mlp_bn":
        return nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
    if kind == "mlp_no_bn":
        return nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "none":
        return nn.Identity()
    raise EncoderError(f"unknown head {kind!r}; choose one of: {', '.join(HEADS)}")


class SimCLRModel(nn.Module):
    """Encoder + projection head; `forward` returns (features, projections)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(images)
        return features, self.head(features)
