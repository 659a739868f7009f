"""The classifier file: `model.safetensors` + `model.json`, written by `finetune` and `supervised`,
read by `evaluate` and users' own code.

model.json says how to rebuild the network: `kind` (`finetune`: the encoder's encoder.json under
`encoder`, then `head`; `supervised`: the timm `model` name and `cifar_stem`), the `classes` its
head predicts, in order, and the input (`size`, `in_chans`).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from fastclr.encoders import build_classifier, build_encoder
from fastclr.trainers._errors import EvalError
from fastclr.trainers._eval_io import save_weights, write_json
from fastclr.trainers._linear import make_head


def save_classifier(model: nn.Module, out: Path, description: dict) -> None:
    """model.safetensors, then model.json: a reader never finds a description without its weights."""
    save_weights(model, out / "model.safetensors")
    write_json(out / "model.json", description)


def load_classifier(folder: str | Path) -> tuple[nn.Module, dict]:
    """The classifier a `finetune` or `supervised` run saved in `folder`, in eval mode, and its model.json."""
    folder = Path(folder)
    if not (folder / "model.json").is_file() or not (folder / "model.safetensors").is_file():
        raise EvalError(
            f"{folder}: no model.json and model.safetensors; pass the --out folder of "
            "`fastclr finetune` or `fastclr supervised`"
        )
    try:
        description = json.loads((folder / "model.json").read_text())
    except ValueError as err:
        raise EvalError(
            f"{folder / 'model.json'}: not valid JSON ({err}); train the classifier again"
        ) from None
    classes = len(description["classes"])
    if description["kind"] == "finetune":
        info = description["encoder"]
        encoder = build_encoder(info["encoder"], info["cifar_stem"], in_chans=info["in_chans"])
        model = nn.Sequential(encoder, make_head(description["head"], info["num_features"], classes))
    else:
        model = build_classifier(
            description["model"],
            classes,
            cifar_stem=description["cifar_stem"],
            in_chans=description["in_chans"],
            img_size=description["size"],
        )
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval(), description
