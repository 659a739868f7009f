"""Where DALI's operators run (augment_device) and how many threads and batches ahead they get.

The CPU operators are the graph every CPU test already checks (distributions included);
on a GPU run they differ only in DALI copying the finished images to the device (test_pipelines_gpu.py).
"""

import pytest
import torch
from test_pipelines import IDENTITY, SIZE, id_shards, pixels_of

from fastclr.pipelines import AUGMENT_DEVICES, PipelineError, augment_on, create_loader
from fastclr.pipelines._loader import AUTO_CPU_MAX_SIDE, default_threads


def test_auto_puts_small_images_on_the_cpu_and_large_ones_on_the_gpu(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(16)))
    assert augment_on("auto", 32, gpu=True) == "cpu"
    assert augment_on("auto", AUTO_CPU_MAX_SIDE, gpu=True) == "cpu"
    assert augment_on("auto", AUTO_CPU_MAX_SIDE + 1, gpu=True) == "gpu"
    assert augment_on("auto", 224, gpu=True) == "gpu"
    assert augment_on("gpu", 32, gpu=True) == "gpu" and augment_on("cpu", 224, gpu=True) == "cpu"
    assert {augment_on(choice, 224, gpu=False) for choice in AUGMENT_DEVICES} == {"cpu"}  # no GPU
    with pytest.raises(PipelineError, match="unknown augment_device 'tpu'; choose one of: auto, gpu, cpu"):
        augment_on("tpu", 32, gpu=True)


def test_auto_keeps_small_images_on_the_gpu_without_the_cores_to_feed_it(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 cores a process: too few for CPU ops
    assert augment_on("auto", 32, gpu=True) == "gpu"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert augment_on("auto", 32, gpu=True) == "cpu"


def test_cpu_ops_feeding_a_gpu_get_the_cores_but_the_trainers_and_the_rest_four_threads(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(16)))
    assert default_threads(ops_on_gpu=True) == 4 and default_threads(ops_on_gpu=False) == 14
    assert default_threads(ops_on_gpu=False, gpu_run=False) == 4  # a CPU run's model needs the cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four processes on the machine share its cores
    assert default_threads(ops_on_gpu=False) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")  # never fewer than 2
    assert default_threads(ops_on_gpu=False) == 2


def test_on_the_cpu_every_choice_runs_the_same_graph(tmp_path):
    folder, pixels = id_shards(tmp_path, 16, encoding="raw")
    batches = []
    for choice in AUGMENT_DEVICES:
        loader = create_loader(
            "pretrain",
            folder,
            batch_size=8,
            size=SIZE,
            augment_overrides=IDENTITY,
            augment_device=choice,
            prefetch=3,
            num_threads=1,
        )
        assert loader.augment_device == "cpu" and loader.num_threads == 1
        assert loader.pipe.prefetch_queue_depth == 3
        batches.append(next(iter(loader)))
    for view1, *_, label in batches:  # (views..., label)
        assert (
            view1.shape == (8, 3, SIZE, SIZE) and view1.dtype == torch.float32 and view1.device.type == "cpu"
        )
        assert (pixels_of(view1, folder) - torch.as_tensor(pixels[label.numpy()]).float()).abs().max() <= 1
        torch.testing.assert_close(view1, batches[0][0])


def test_a_bad_augment_device_or_prefetch_is_one_line(tmp_path, run_cli):
    folder, _ = id_shards(tmp_path, 16)
    code, _, err = run_cli("pretrain", f"data.train={folder}", "data.augment_device=tpu")
    assert code == 1 and "data.augment_device='tpu' is not valid; choose one of: auto, gpu, cpu" in err
    code, _, err = run_cli("pretrain", f"data.train={folder}", "data.prefetch=0")
    assert code == 1 and "data.prefetch=0" in err and "must be at least 1" in err
