import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def torchrun(port: int, *args, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Two processes of ARGS (a script and its arguments, or `-m fastclr ...`) under torchrun on PORT,
    one OpenMP thread each (the cores are shared), ENV added to the environment; output kept as text."""
    return subprocess.run(
        [TORCHRUN, "--nproc_per_node", "2", "--master_port", str(port), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=timeout,
    )


def read_back_webdataset(folder: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of a shard folder, read with webdataset, by key."""
    import webdataset as wds

    urls = sorted(str(p) for p in folder.glob("*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}


def read_back_dali(folder: Path, image_ext: str) -> dict[int, tuple[np.ndarray, int]]:
    """Every sample as DALI's CPU webdataset reader sees it through our index files.

    Returns {source index (the sample key): (image member bytes as uint8, label)}.
    """
    from nvidia.dali import fn, pipeline_def

    from fastclr import shards

    manifest = shards.load_manifest(folder)
    tars = [str(folder / s["tar"]) for s in manifest["shards"]]
    idxs = [str(folder / s["index"]) for s in manifest["shards"]]
    total = manifest["num_samples"]

    @pipeline_def(batch_size=total, num_threads=1, device_id=None)
    def read():
        image, label = fn.readers.webdataset(
            paths=tars, index_paths=idxs, ext=[image_ext, "cls"], missing_component_behavior="error"
        )
        return image, label, fn.get_property(image, key="source_info")

    pipe = read()
    pipe.build()
    images, labels, infos = pipe.run()
    out = {}
    for n in range(total):
        member = bytes(np.array(infos[n])).decode().rsplit(":", 1)[-1]  # "<tar>:<offset>:<key>.<ext>"
        out[int(member.split(".")[0])] = (np.array(images[n]), int(bytes(np.array(labels[n]))))
    return out


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is (the lent GPU machine: bench/gpu.sh)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def run_cli(capsys):
    """Run `fastclr ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from fastclr.launch.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
