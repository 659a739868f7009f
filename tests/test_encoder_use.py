"""A trained encoder outside fastclr's commands: load_encoder + preprocessing, export-timm, and the
documented snippet that needs only timm and safetensors (docs/encoder.md)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from test_shards_bad_input import one_line_error

from fastclr import shards
from fastclr.encoders import build_encoder
from fastclr.pipelines import create_loader
from fastclr.trainers import PretrainConfig, load_encoder, preprocessing, pretrain
from fastclr.trainers._encoder_file import export_encoder

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A real 2-step pretrain of a CIFAR-stem resnet18 on PNG shards; a one-image shard folder and
    its image as a file."""
    root = tmp_path_factory.mktemp("encoder-use")
    source = shards.open_source("synthetic", None, "train", num=32, size=SIZE, classes=2, seed=3)
    shards.convert(source, root / "train", encoding="png", progress=False)
    cfg = PretrainConfig(run_dir=str(root / "run"), epochs=1, batch_size=16, cpu=True)
    cfg.data.train, cfg.data.size, cfg.data.num_threads = str(root / "train"), SIZE, 1
    cfg.model.encoder, cfg.model.cifar_stem, cfg.model.hidden_dim, cfg.model.out_dim = (
        "resnet18",
        True,
        32,
        16,
    )
    cfg.optim.name, cfg.optim.lr, cfg.track.progress, cfg.knn_every = "adam", 1e-3, False, 0
    pretrain(cfg)
    one = shards.open_source("synthetic", None, "train", num=1, size=SIZE, classes=2, seed=4)
    shards.convert(one, root / "one", encoding="png", progress=False)
    Image.fromarray(one.get(0).image).save(root / "image.png")
    return root


def inputs(made) -> tuple[Image.Image, torch.Tensor]:
    image = Image.open(made / "image.png")
    return image, preprocessing(load_encoder(made / "run")[1])(image)[None]


def test_preprocessing_is_the_view_dali_gives_the_evaluations(made):
    encoder, info = load_encoder(made / "run")
    assert (info["cifar_stem"], info["in_chans"], info["image_size"]) == (True, 3, SIZE)
    (dali, _), *_ = list(create_loader("val", made / "one", batch_size=1, size=SIZE))
    one = shards.load_manifest(made / "one")  # the loader normalises with its folder's statistics
    ours = preprocessing({**info, "mean": one["mean"], "std": one["std"]})(Image.open(made / "image.png"))
    torch.testing.assert_close(ours[None], dali.float().cpu(), atol=1e-6, rtol=0)
    assert encoder(ours[None]).shape == (1, 512)


def test_export_timm_is_loaded_by_timm_itself_with_the_cifar_stem_steps(made, tmp_path, run_cli):
    encoder, info = load_encoder(made / "run")
    code, out, err = run_cli("export-timm", "--encoder", made / "run", "--out", tmp_path / "exported")
    assert code == 0, err
    assert "its CIFAR stem: timm builds ResNets with the ImageNet stem" in out
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config["pretrained_cfg"]["mean"] == info["mean"] and config["fastclr"]["cifar_stem"]
    # the steps docs/encoder.md gives (and config.json's fastclr.load names)
    model = timm.create_model(f"local-dir:{tmp_path / 'exported'}", pretrained=False)
    model.conv1 = torch.nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    timm.models.load_checkpoint(model, str(tmp_path / "exported" / "model.safetensors"), strict=True)
    image, ours = inputs(made)
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    torch.testing.assert_close(transform(image.convert("RGB"))[None], ours)
    assert torch.equal(model.eval()(ours), encoder(ours))


def test_a_plain_stem_export_loads_with_pretrained_true_and_through_the_overlay(made, tmp_path, run_cli):
    cfg = PretrainConfig()
    cfg.model.encoder, cfg.data.train, cfg.data.size = "resnet18", str(made / "train"), 96
    plain = build_encoder("resnet18")
    (tmp_path / "plain").mkdir()
    export_encoder(tmp_path / "plain", plain, cfg, shards.load_manifest(made / "train"), 3)
    code, _, err = run_cli("export-timm", "--encoder", tmp_path / "plain", "--out", tmp_path / "exported")
    assert code == 0, err
    x = torch.rand(2, 3, 96, 96)
    expected = load_encoder(tmp_path / "plain")[0](x)
    model = timm.create_model(f"local-dir:{tmp_path / 'exported'}", pretrained=True).eval()
    assert torch.equal(model(x), expected)
    data = timm.data.resolve_data_config(model=model)
    assert list(data["mean"]) == shards.load_manifest(made / "train")["mean"]
    image = Image.open(made / "image.png").resize((120, 100))
    fastclr_view = preprocessing(load_encoder(tmp_path / "plain")[1])(image)
    # resized to 110 px (96 / 0.875, rounded) by both; PIL's resize and torch's differ by at most a level
    level = 1.01 / 255 / min(data["std"])
    torch.testing.assert_close(timm.data.create_transform(**data)(image), fastclr_view, atol=level, rtol=0)

    cfg_json = json.loads((tmp_path / "exported" / "config.json").read_text())["pretrained_cfg"]
    keys = ("input_size", "mean", "std", "crop_pct", "interpolation", "crop_mode")
    overlay = dict(file=str(tmp_path / "exported" / "model.safetensors"), **{k: cfg_json[k] for k in keys})
    model = timm.create_model("resnet18", pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    assert torch.equal(model.eval()(x), expected)
    assert list(timm.data.resolve_data_config(model=model)["mean"]) == list(data["mean"])


def test_export_timm_refuses_small_cnn_and_a_missing_encoder(made, tmp_path, run_cli):
    cfg = PretrainConfig()
    cfg.model.encoder, cfg.data.train = "small_cnn", str(made / "train")
    (tmp_path / "cnn").mkdir()
    export_encoder(tmp_path / "cnn", build_encoder("small_cnn"), cfg, shards.load_manifest(made / "train"), 3)
    code, _, err = run_cli("export-timm", "--encoder", tmp_path / "cnn", "--out", tmp_path / "out")
    assert "small_cnn is fastclr's own network, not a timm model" in one_line_error(code, err)
    code, _, err = run_cli("export-timm", "--encoder", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert "nowhere: not found" in one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def test_the_documented_snippet_without_fastclr_gives_the_same_features(made, tmp_path):
    text = (ROOT / "docs" / "encoder.md").read_text()
    snippet = re.search(r"tests/test_encoder_use.py -->\n```python\n(.*?)```", text, re.S).group(1)
    assert 'Path("runs/pretrain")' in snippet
    program = snippet.replace('Path("runs/pretrain")', f"Path({str(made / 'run')!r})") + (
        "import sys\n"
        "from PIL import Image\n"
        f"torch.save(features(Image.open({str(made / 'image.png')!r})), {str(tmp_path / 'f.pt')!r})\n"
        "assert not [m for m in sys.modules if m.startswith('fastclr')], 'the snippet imported fastclr'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # fastclr not importable from the tree
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    encoder, _ = load_encoder(made / "run")
    # another process may sum in another order (threads): equal up to float rounding
    torch.testing.assert_close(
        torch.load(tmp_path / "f.pt"), encoder(inputs(made)[1])[0], rtol=1e-5, atol=1e-6
    )
