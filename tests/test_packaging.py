"""fastclr installs one import name, so a user's folders can never shadow it.

The packages used to install as top-level `shards`, `pipelines`, `trainers`, ... and a working
folder holding a data folder named `shards/` (as the README's own `--out shards/train` makes)
shadowed them: `-m launch` died with "module 'shards' has no attribute 'SOURCES'". Here every kind
of documented command runs from such a folder: the console script, `python -m fastclr`, a
two-process torchrun launch, a benchmark module and a script importing the public API.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
NAMES = ("shards", "pipelines", "encoders", "trainers", "launch", "bench")


def run(cwd: Path, *command, timeout=300) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    if "PYTHONPATH" in os.environ:  # a checkout run without installing it (a worktree): keep it importable
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    done = subprocess.run(
        list(map(str, command)), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working folder whose data folders are named like fastclr's packages, with Python files in
    some (a user's own package named `launch`, a `trainers/__init__.py`): the worst case."""
    root = tmp_path_factory.mktemp("work")
    for name in NAMES:
        (root / name).mkdir()
    (root / "launch" / "__init__.py").write_text(
        "raise ImportError('the user launch package was imported')\n"
    )
    (root / "trainers" / "__init__.py").write_text(
        "raise ImportError('the user trainers package was imported')\n"
    )
    run(
        root,
        BIN / "fastclr",
        "shards",
        "convert",
        "synthetic",
        "--num",
        96,
        "--size",
        16,
        "--classes",
        4,
        "--shard-size",
        48,
        "--out",
        "shards/train",
        "--quiet",
    )
    return root


def test_the_command_and_the_module_run_beside_folders_named_like_the_packages(workdir):
    assert "pretrain" in run(workdir, BIN / "fastclr", "--help")
    assert "96 in 2 shards" in run(workdir, sys.executable, "-m", "fastclr", "shards", "info", "shards/train")
    assert "--runs" in run(workdir, sys.executable, "-m", "fastclr.bench.soak", "--help")


@pytest.mark.multiproc
def test_torchrun_and_a_script_of_the_public_api_run_there_too(workdir):
    run(
        workdir,
        BIN / "torchrun",
        "--nproc_per_node",
        2,
        "--master_port",
        29571,
        "-m",
        "fastclr",
        "pretrain",
        "data.train=shards/train",
        "run_dir=runs/mine",
        "epochs=1",
        "batch_size=8",
        "cpu=true",
        "precision=fp32",
        "data.size=16",
        "data.num_threads=1",
        "model.encoder=small_cnn",
        "model.hidden_dim=32",
        "optim.warmup_epochs=0.5",
        "track.progress=false",
    )
    (workdir / "use.py").write_text(
        "from fastclr.pipelines import create_loader\n"
        "from fastclr.shards import load_manifest\n"
        "from fastclr.trainers import extract_features, load_encoder\n"
        "encoder, info = load_encoder('runs/mine')\n"
        "loader = create_loader('val', 'shards/train', batch_size=32, size=info['image_size'])\n"
        "features, labels = extract_features(encoder, loader)\n"
        "print(tuple(features.shape), load_manifest('shards/train')['num_classes'])\n"
    )
    assert run(workdir, sys.executable, "use.py").split()[-3:] == ["(96,", "128)", "4"]
