"""encoder.json, the description beside an encoder.safetensors: its schema and its two hashes.

    {"encoder": "resnet18", "cifar_stem": true, "in_chans": 3, "num_features": 512, "image_size": 32,
     "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "pretrained_on": "shards/cifar10-train",
     "data_fraction": 1.0, "sha256": "<of encoder.safetensors>", "description_sha256": "<of the rest>"}

Every key is checked against `EncoderInfo` when the file is read: a missing key, a wrong type or a
list where an object belongs is one line naming the key. `sha256` is the weights' hash;
`description_sha256` hashes every other key (the weights' hash included), so an edited architecture,
`image_size`, mean/std or channel count is refused as surely as changed weights: they change what an
evaluation measures as much. The hashes guard against edits and damage, not against someone who
recomputes them. A file without them (written by hand, or by a fastclr before the description hash)
is refused unless the caller trusts it (`trust_unhashed=true`), which is then said in one line.

No torch here: `fastclr report` reads descriptions without loading any weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fastclr.trainers._errors import EvalError

SHA256 = "^[0-9a-f]{64}$"
HASHES = ("sha256", "description_sha256")


class EncoderInfo(BaseModel):
    """The schema of encoder.json: how to rebuild the weights beside it and how to feed them."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    encoder: str = Field(min_length=1)  # small_cnn or a timm ResNet name
    cifar_stem: bool
    in_chans: int = Field(ge=1)
    num_features: int = Field(ge=1)
    image_size: int = Field(ge=1)  # the side the evaluations resize and crop to
    mean: list[float] | None = None  # per channel, of pixels scaled to [0, 1]; none when imported
    std: list[float] | None = None
    pretrained_on: str
    data_fraction: float | None = None
    sha256: str | None = Field(None, pattern=SHA256)  # of encoder.safetensors
    description_sha256: str | None = Field(None, pattern=SHA256)  # of every key above, sha256 included

    @model_validator(mode="after")
    def _per_channel(self) -> EncoderInfo:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.in_chans:
                raise ValueError(f"{name} holds {len(values)} values for in_chans={self.in_chans}")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std {self.std} must be positive")
        return self


def description_sha256(info: dict) -> str:
    """The hash of every key but `description_sha256` itself, in a canonical JSON spelling."""
    described = {k: v for k, v in info.items() if k != "description_sha256"}
    return hashlib.sha256(json.dumps(described, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def describe(info: dict, weights: bytes) -> str:
    """encoder.json's text for `info` and the weights' bytes: both hashes added, the schema checked."""
    info = {**info, "sha256": hashlib.sha256(weights).hexdigest()}
    info["description_sha256"] = description_sha256(info)
    EncoderInfo.model_validate(info)  # a writer's mistake fails here, not in a user's evaluation
    return json.dumps(info, indent=1) + "\n"


def read_encoder_info(info_path: str | Path, trust_unhashed: bool = False, say=print) -> dict:
    """The checked content of an encoder.json: its schema, then its description's hash (its weights'
    hash is checked by whoever reads the weights). EvalError says what is wrong and what to do.

    `trust_unhashed`: accept a file that records no hash (then `say` one line saying so)."""
    info_path = Path(info_path)
    redo = "export the encoder again (a finished `fastclr pretrain` run exports it again when rerun)"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as err:
        raise EvalError(f"{info_path}: not valid JSON ({err}); {redo}") from None
    try:
        EncoderInfo.model_validate(info)
    except ValidationError as err:
        raise EvalError(f"{info_path}: {_first_problem(err)}; {redo}") from None
    missing = [key for key in HASHES if key not in info]
    if missing and not trust_unhashed:
        raise EvalError(
            f"{info_path}: records no {' and no '.join(missing)}, so changed weights or settings "
            f"could not be told apart; {redo}, or pass trust_unhashed=true to use it unchecked"
        )
    if missing:
        say(f"note: {info_path}: no {' and no '.join(missing)}; used unchecked (trust_unhashed=true)")
    if "description_sha256" in info and description_sha256(info) != info["description_sha256"]:
        raise EvalError(
            f"{info_path}: changed since export (description_sha256 does not match: its architecture, "
            f"image_size, mean/std or channels are not what the weights were exported with); "
            f"restore it or {redo}"
        )
    return info


def _first_problem(err: ValidationError) -> str:
    """`key image_size: Input should be a valid integer (got '32')`, from pydantic's first error."""
    problem = err.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":
        return f"unknown key {where!r}; the keys are {', '.join(EncoderInfo.model_fields)}"
    if problem["type"] == "missing":
        return f"key {where!r} is missing"
    if not where:  # the whole file (a list, a number) or a rule between keys
        if problem["type"] == "model_type":
            return f"not a JSON object of settings (a {type(problem['input']).__name__})"
        return problem["msg"].removeprefix("Value error, ")
    return f"key {where}: {problem['msg']} (got {json.dumps(problem['input'])[:60]})"
