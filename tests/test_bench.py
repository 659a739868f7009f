"""The benchmarks run for a few steps on tiny data, so they cannot rot (figures: BENCHMARKS.md)."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from datasets import write_imagefolder


def run_bench(*args):
    result = subprocess.run(
        [sys.executable, "-m", *map(str, args)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_convert_and_pipeline_benchmarks_write_their_json(tmp_path):
    for split in ("train", "test"):
        write_imagefolder(tmp_path / "src" / "cifar10" / split, per_class=12, size=32)
    run_bench(
        "fastclr.bench.convert",
        "--src",
        tmp_path / "src",
        "--repeats",
        1,
        "--json",
        tmp_path / "convert.json",
    )
    convert = json.loads((tmp_path / "convert.json").read_text())
    assert convert["speed"][0]["images"] == 72 and {r["encoding"] for r in convert["size"]} == {
        "jpeg (kept)",
        "png",
        "raw",
    }
    run_bench(
        "fastclr.bench.pipeline",
        "--src",
        tmp_path / "src",
        "--data",
        tmp_path / "data",
        "--batch-size",
        4,
        "--batches",
        2,
        "--warmup",
        1,
        "--repeats",
        1,
        "--synthetic",
        32,
        "--threads",
        1,
        "--workers",  # more than cifar10's one tar: one worker a tar at most, so the DataLoader gets one
        2,
        "--json",
        tmp_path / "pipeline.json",
    )
    pipeline = json.loads((tmp_path / "pipeline.json").read_text())
    assert [r["dataset"] for r in pipeline["rows"]] == ["cifar10-jpeg", "cifar10-raw", "synthetic224-jpeg"]
    assert [r["workers"] for r in pipeline["rows"]] == [1, 1, 2]
    assert [r["dali_threads"] for r in pipeline["rows"]] == [1, 1, 1]
    assert all(r["dali_images_per_s"] > 0 and r["torchvision_images_per_s"] > 0 for r in pipeline["rows"])
    table = run_bench("fastclr.bench.table", tmp_path / "convert.json", tmp_path / "pipeline.json").stdout
    assert "| 1 |" in table and "synthetic224-jpeg" in table


def test_train_benchmark_measures_every_mode_and_derives_its_ratios(tmp_path):
    for split in ("train", "test"):
        write_imagefolder(tmp_path / "src" / "cifar10" / split, per_class=12, size=32)
    run_bench(
        "fastclr.bench.train",
        *("--src", tmp_path / "src", "--data", tmp_path / "data", "--synthetic", 32),
        *("--models", "small_cnn", "--batch-size", 8, "--batch-size-224", 4),
        *("--steps", 2, "--warmup", 1, "--repeats", 2, "--dali-threads", 1, "--workers", 2),
        *("--json", tmp_path / "train.json"),
    )
    result = json.loads((tmp_path / "train.json").read_text())
    assert result["device"] == "cpu" and result["commit"] and "bench.train" in result["command"]
    assert [(r["dataset"], r["size"]) for r in result["rows"]] == [
        ("cifar10-raw", 32),
        ("synthetic224-jpeg", 224),
    ]
    assert [r["workers"] for r in result["rows"]] == [1, 2]  # 2 asked; cifar10-raw has 1 tar
    for row in result["rows"]:
        modes = row["modes"]
        assert set(modes) == {"model", "dali", "torchvision"}
        for mode in modes.values():
            assert len(mode["runs"]) == 2 and mode["images_per_s"] > 0 and 0 <= mode["data_wait"] <= 1
            assert mode["epoch_seconds"] == round(row["epoch_images"] / mode["images_per_s"], 1)
        assert row["efficiency"] == round(modes["dali"]["images_per_s"] / modes["model"]["images_per_s"], 3)
        assert row["first_step_seconds"] > 0 and row["first_warmup_seconds"] > 0
        assert row["speedup"] == round(
            modes["dali"]["images_per_s"] / modes["torchvision"]["images_per_s"], 2
        )
    table = run_bench("fastclr.bench.table", tmp_path / "train.json").stdout
    assert "| synthetic224-jpeg | 224 | small_cnn | 4 | off | off | lars | cpu |" in table


def test_time_to_accuracy_resumes_its_run_and_continues_its_curve(tmp_path):
    for split in ("train", "test"):
        write_imagefolder(tmp_path / "src" / "cifar10" / split, per_class=8, size=32)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "epochs: 2\nbatch_size: 8\nprecision: fp32\ncpu: true\ndata: {num_threads: 1}\n"
        "model: {encoder: small_cnn, hidden_dim: 32, out_dim: 16}\n"
        "optim: {name: lars, lr: 0.3, warmup_epochs: 1}\n"
    )
    common = (
        *("--config", config, "--src", tmp_path / "src", "--data", tmp_path / "data"),
        *("--run-dir", tmp_path / "run", "--chunk-epochs", 1, "--probe-epochs", 5, "--knn-k", 5),
        *("--eval-batch-size", 16, "--json", tmp_path / "tta.json"),
    )
    run_bench("fastclr.bench.time_to_accuracy", *common, "--budget-seconds", 0.001, "track.log_every=1")
    first = json.loads((tmp_path / "tta.json").read_text())
    assert [p["global_step"] for p in first["curve"]] == [3] and not first["finished"]
    run_bench("fastclr.bench.time_to_accuracy", *common, "--plot", tmp_path / "tta.png", "track.log_every=1")
    result = json.loads((tmp_path / "tta.json").read_text())
    curve = result["curve"]
    assert result["finished"] and result["total_steps"] == 6 and curve[0] == first["curve"][0]
    assert [p["global_step"] for p in curve] == [3, 6] and [p["epoch"] for p in curve] == [1.0, 2.0]
    assert curve[1]["train_seconds"] > curve[0]["train_seconds"] > 0
    assert all(0 <= p[key] <= 1 for p in curve for key in ("knn", "knn_k10_majority", "linear"))
    assert result["device"] == "cpu" and result["commit"] and result["torch"] and result["dali"]
    assert "bench.time_to_accuracy" in result["command"] and set(result["reached"]) == {
        "linear >= 86%",
        "knn >= 90%",
        "knn_k10_majority >= 90%",
    }
    assert result["projection"] is None  # two points support no fit
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r] == [1, 2, 3, 4, 5, 6]  # the second chunk resumed
    assert (tmp_path / "tta.png").stat().st_size > 0 and (tmp_path / "run" / "encoder.safetensors").is_file()
    table = run_bench("fastclr.bench.table", tmp_path / "tta.json").stdout
    assert "| 6 | 2.0 |" in table and "linear >= 86%: " in table


def test_the_projection_recovers_a_power_law_and_stays_apart_from_the_curve():
    from fastclr.bench.table import time_to_accuracy_table
    from fastclr.bench.time_to_accuracy import project

    def point(epoch):  # error falls as 0.6 * epochs^-0.4 (linear), 0.8 * epochs^-0.3 (kNN); 2 s an epoch
        linear, knn = 1 - 0.6 * epoch**-0.4, 1 - 0.8 * epoch**-0.3
        return {
            "global_step": 10 * epoch,
            "epoch": epoch,
            "train_seconds": 2.0 * epoch,
            "linear": linear,
            "knn": knn,
            "knn_k10_majority": knn + 0.01,
        }

    curve = [point(e) for e in (10, 20, 40, 70, 100)]
    before = [dict(p) for p in curve]
    projection = project(curve, 1000)
    assert curve == before and "not measured" in projection["label"] and projection["epochs"] == 1000
    assert projection["linear"] == pytest.approx(1 - 0.6 * 1000**-0.4, abs=1e-4)
    assert projection["knn"] == pytest.approx(1 - 0.8 * 1000**-0.3, abs=1e-4)
    assert projection["linear_fit"] == {"a": 0.6, "b": 0.4} and projection["train_seconds"] == 2000.0
    assert project(curve[:2], 1000) is None and project(curve, 100) is None  # too few points; no farther
    table = time_to_accuracy_table(
        {
            "config": "c.yaml",
            "overrides": [],
            "device": "NVIDIA H100 80GB HBM3",
            "command": "python -m fastclr.bench.time_to_accuracy",
            "commit": "abc",
            "torch": "t",
            "dali": "d",
            "curve": curve,
            "projection": projection,
        }
    )
    assert "| projection (not measured) | 1000 | 2000.0 |" in table and "Projection: error = a" in table


def test_probe_benchmark_measures_pretraining_with_the_probe_off_and_on(tmp_path):
    run_bench(
        "fastclr.bench.probe",
        *("--encoder", "small_cnn", "--batch-size", 8, "--steps", 4, "--log-every", 2, "--repeats", 1),
        *("--json", tmp_path / "probe.json"),
    )
    result = json.loads((tmp_path / "probe.json").read_text())
    assert result["device"] == "cpu" and result["commit"] and "bench.probe" in result["command"]
    off, on = result["probe_off"], result["probe_on"]
    assert len(off["runs"]) == len(on["runs"]) == 1 and off["images_per_s"] > 0 and on["images_per_s"] > 0
    assert result["ratio_on_off"] == round(on["images_per_s"] / off["images_per_s"], 3)
    assert "| on |" in run_bench("fastclr.bench.table", tmp_path / "probe.json").stdout


def test_views_benchmark_compares_each_view_set_with_two_views(tmp_path):
    write_imagefolder(tmp_path / "src" / "cifar10" / "test", per_class=8, size=32)
    run_bench(
        "fastclr.bench.views",
        *("--src", tmp_path / "src", "--data", tmp_path / "data", "--synthetic", 16, "--threads", 1),
        *("--sets", 2, 4, "2+3", "--batch-size", 8, "--batch-size-224", 2, "--batches", 2, "--warmup", 1),
        *("--repeats", 2, "--json", tmp_path / "views.json"),
    )
    result = json.loads((tmp_path / "views.json").read_text())
    rows = {(r["dataset"], r["set"]): r for r in result["rows"]}
    assert set(rows) == {
        (d, s) for d in ("cifar10-test-jpeg", "synthetic224-jpeg") for s in ("2", "4", "2+3")
    }
    for (dataset, spec), row in rows.items():
        views = {"2": 2, "4": 4, "2+3": 5}[spec]
        assert row["views_per_s"] == pytest.approx(views * row["images_per_s"], rel=0.01)
        assert len(row["runs_views_per_s"]) == 2 and row["cpu_ms_per_1000_views"] > 0
        two = rows[(dataset, "2")]
        # the ratio of the rates as stored (to 0.1 view/s): at a loaded machine's few views/s that
        # rounding alone moves it by a few percent
        assert row["speed"] == pytest.approx(row["views_per_s"] / two["views_per_s"], rel=0.05, abs=0.01)
    assert (
        rows[("synthetic224-jpeg", "2+3")]["small_size"] == 96
        and rows[("cifar10-test-jpeg", "2")]["speed"] == 1
    )
    assert "| 2 x 32 px + 3 x 16 px |" in run_bench("fastclr.bench.table", tmp_path / "views.json").stdout


def test_loss_benchmark_times_every_batch_size(tmp_path):
    run_bench(
        "fastclr.bench.loss",
        "--batch-sizes",
        8,
        16,
        "--calls",
        2,
        "--repeats",
        2,
        "--json",
        tmp_path / "loss.json",
    )
    result = json.loads((tmp_path / "loss.json").read_text())
    assert [r["batch_size"] for r in result["rows"]] == [8, 16]
    assert all(len(r["runs"]) == 2 and r["ms"] > 0 for r in result["rows"])
    assert "| 16 |" in run_bench("fastclr.bench.table", tmp_path / "loss.json").stdout


def test_optim_benchmark_times_each_optimizer_step(tmp_path):
    run_bench(
        "fastclr.bench.optim",
        *("--model", "small_cnn", "--steps", 2, "--warmup", 1, "--repeats", 2),
        *("--json", tmp_path / "optim.json"),
    )
    result = json.loads((tmp_path / "optim.json").read_text())
    assert [r["optimizer"] for r in result["rows"]] == ["lars_timm", "lars"] and result["tensors"] > 0
    assert all(len(r["runs"]) == 2 and r["ms"] > 0 for r in result["rows"])
    assert result["rows"][0]["speedup"] == 1.0
    assert "| lars |" in run_bench("fastclr.bench.table", tmp_path / "optim.json").stdout


@pytest.mark.gpu
def test_on_the_gpu_no_timed_step_syncs_the_host(tmp_path):
    write_imagefolder(tmp_path / "src" / "cifar10" / "train", per_class=24, size=32)
    run_bench(
        "fastclr.bench.train",
        *("--src", tmp_path / "src", "--data", tmp_path / "data", "--synthetic", 16),
        *("--device", "cuda", "--precision", "bf16", "--channels-last", "--datasets", "cifar10-raw"),
        *("--batch-size", 64, "--steps", 3, "--warmup", 2, "--repeats", 1, "--json", tmp_path / "gpu.json"),
    )
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["host_sync_check"] and result["device"] != "cpu"  # a sync in a step fails the run
    assert all(mode["peak_memory_gb"] > 0 for mode in result["rows"][0]["modes"].values())


def test_the_commit_is_the_projects_not_the_folder_around_a_copy(tmp_path):
    """On the GPU machine the tree arrives without .git: git there read a parent repository."""
    import shutil

    outer = tmp_path / "outer"
    copy = outer / "project"
    for package in ("bench", "shards"):
        shutil.copytree(Path(__file__).parents[1] / package, copy / package)
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(outer),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
        ]
        + ["-m", "not the project"],
        check=True,
    )
    read = [sys.executable, "-c", "from bench.convert import project_commit; print(project_commit())"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy)}
    assert subprocess.run(read, capture_output=True, text=True, env=env, cwd=copy).stdout.strip() == "None"
    told = subprocess.run(
        read, capture_output=True, text=True, env={**env, "FASTCLR_COMMIT": "5a38ca7"}, cwd=copy
    )
    assert told.stdout.strip() == "5a38ca7"


def test_profile_names_where_a_steps_time_goes(tmp_path):
    write_imagefolder(tmp_path / "src" / "cifar10" / "train", per_class=12, size=32)
    run_bench(
        "fastclr.bench.profile",
        *("--src", tmp_path / "src", "--data", tmp_path / "data", "--synthetic", 16, "--model", "small_cnn"),
        *("--batch-size", 8, "--steps", 2, "--warmup", 1, "--dali-threads", 1, "--top", 5),
        *("--json", tmp_path / "profile.json", "--trace", tmp_path / "trace.json"),
    )
    result = json.loads((tmp_path / "profile.json").read_text())
    assert len(result["top"]) == 5 and result["images_per_s"] > 0 and result["first_step_seconds"] > 0
    assert any("conv" in row["name"] for row in result["top"])  # the model's own ops are seen
    times = [row["self_cpu_ms_per_step"] for row in result["top"]]
    assert times == sorted(times, reverse=True) and (tmp_path / "trace.json").stat().st_size > 0


def test_pretrain_speed_sets_the_logged_figure_beside_the_benchs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    records = [
        {"step": 1, "epoch": 0, "loss": 5.0, "images_per_s": 10.0, "data_wait": 0.5},  # compiling: left out
        {"step": 2, "epoch": 0, "epoch_loss": 5.0, "epoch_seconds": 9.0},
        *(
            {"step": s, "epoch": 1, "loss": 4.0, "images_per_s": v, "data_wait": 0.1}
            for s, v in [(3, 90), (4, 80)]
        ),
        {"step": 5, "epoch": 1, "loss": 4.0, "images_per_s": 70.0, "data_wait": 0.2},
        {"step": 5, "epoch": 1, "epoch_loss": 4.0, "epoch_seconds": 3.0},
    ]
    # A line that is no record and a last line torn by a kill are left out, as every reader does.
    odd = '{"step": "five", "loss": 1.0}\n{"step": 6, "epoch": 1, "images_'
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + odd)
    row = {"model": "resnet18", "batch_size": 512, "optimizer": "lars", "compile": False, "prefetch": 2}
    row.update({"cuda_graphs": False, "augment_device": "cpu"})
    bench = {
        "command": "python -m fastclr.bench.train ...",
        "device": "cpu",
        "rows": [
            {**row, "augment_device": "gpu", "modes": {"dali": {"images_per_s": 1.0}}},
            {**row, "modes": {"dali": {"images_per_s": 100.0}, "model": {"images_per_s": 120.0}}},
        ],
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    run_bench(
        "fastclr.bench.pretrain_speed",
        *("--run-dir", run, "--bench", tmp_path / "bench.json", "--json", tmp_path / "out.json"),
        *("--match", "model=resnet18", "augment_device=cpu", "cuda_graphs=false", "batch_size=512"),
    )
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["pretrain"] == {
        "images_per_s": 80.0,
        "data_wait": 0.1,
        "windows": 3,
        "epoch_seconds": [9.0, 3.0],
    }
    assert out["bench"]["dali_images_per_s"] == 100.0 and out["bench"]["model_images_per_s"] == 120.0
    assert out["pretrain_over_bench"] == 0.8
    # with the run's config.yaml, its own settings pick the row: `auto` resolved where the run ran
    from omegaconf import OmegaConf

    from fastclr.trainers import PretrainConfig

    cfg = PretrainConfig(batch_size=512)
    cfg.model.encoder, cfg.optim.name, cfg.data.augment_device = "resnet18", "lars", "auto"
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    run_bench(
        "fastclr.bench.pretrain_speed",
        *("--run-dir", run, "--bench", tmp_path / "bench.json", "--json", tmp_path / "own.json"),
    )
    own = json.loads((tmp_path / "own.json").read_text())
    assert own["matched"] == {**row, "augment_device": "cpu"} and own["pretrain_over_bench"] == 0.8
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastclr.bench.pretrain_speed",
            "--run-dir",
            run,
            "--bench",
            tmp_path / "bench.json",
        ]
        + ["--match", "cuda_graphs=true"],
        capture_output=True,
        text=True,
    )
    assert (
        refused.returncode == 1 and "no bench row has" in refused.stderr and "Traceback" not in refused.stderr
    )


def test_soak_counts_runs_and_crashes(tmp_path):
    from fastclr import shards

    source = shards.open_source("synthetic", None, "train", num=48, size=16, classes=4, seed=0)
    shards.convert(source, tmp_path / "jpeg", encoding="jpeg", shard_size=24, progress=False)
    run_bench(
        "fastclr.bench.soak",
        "--train",
        tmp_path / "jpeg",
        "--runs",
        1,
        "--stop-at",
        2,
        "--batch-size",
        16,
        "--json",
        tmp_path / "soak.json",
    )
    soak = json.loads((tmp_path / "soak.json").read_text())
    assert (soak["runs"], soak["crashed"], soak["failed_otherwise"], soak["processes"]) == (1, 0, 0, 2)
    assert [p["returncode"] for p in soak["details"][0].values()] == [0, 0]


GPU_SH = Path(__file__).resolve().parents[1] / "bench" / "gpu.sh"


def dry_run(out: Path, *stages: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(GPU_SH), "dry-run", *stages],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "OUT": str(out), "PYTHON": sys.executable, **env},
    )


@pytest.mark.slow
def test_the_first_gpu_sessions_call_runs_on_the_cpu_and_returns_two_files(tmp_path):
    """`bash bench/gpu.sh dry-run`: every stage of the default call through the same scripts, arguments
    and file layout at tiny sizes, the graphed rows through GraphedStep without capture; a bench row
    that handed the graphed step the wrong inputs (as once) fails it."""
    result = dry_run(tmp_path / "out")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["results-1.tar", "summary.txt"]  # 8 come back
    summary = (out / "summary.txt").read_text()
    assert ": 6 ok, 0 failed, 0 skipped;" in summary.splitlines()[0]
    assert result.stdout.rstrip().endswith(summary.rstrip()) and len(result.stdout) < 12_000  # output_tail
    with tarfile.open(out / "results-1.tar") as tar:
        names = set(tar.getnames())
        read = {name: tar.extractfile(name).read() for name in names if name.endswith(".json")}
    for name in [
        "setup/versions.txt",
        "tests/pytest-gpu.log",
        "accuracy/accuracy-sgd.png",
        "accuracy/accuracy-sgd-metrics.jsonl",
        "pipeline/pipeline-32.json",
    ]:
        assert name in names, sorted(names)
    levers = json.loads(read["levers/train-levers-32.json"])
    assert [
        (r["optimizer"], r["augment_device"], r["cuda_graphs"], r["graph_captured"]) for r in levers["rows"]
    ] == [
        ("lars_timm", "cpu", False, False),  # "gpu" lands on the CPU here: measured once
        ("lars", "cpu", False, False),
        ("lars", "cpu", True, False),
    ]
    assert levers["commit"] == subprocess.run(
        ["git", "-C", str(GPU_SH.parent), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip() + ("-dirty" if levers["commit"].endswith("-dirty") else "")
    graphed = json.loads(read["pretrain/pretrain-graphs-true-vs-bench.json"])
    assert graphed["matched"]["cuda_graphs"] and graphed["bench"]["row"]["cuda_graphs"]
    accuracy = json.loads(read["accuracy/accuracy-sgd.json"])
    assert accuracy["finished"] and len(accuracy["curve"]) == 2 and "anchor" in accuracy["config"]


@pytest.mark.slow
def test_a_stage_without_time_is_skipped_and_an_unknown_one_fails_the_call(tmp_path):
    result = dry_run(tmp_path / "out", "levers", "nosuch", LIMIT="20")
    assert result.returncode == 1, result.stdout[-3000:]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert ": 0 ok, 1 failed (nosuch), 2 skipped (setup levers);" in summary.splitlines()[0], summary
    assert "train-levers-32: not run" in result.stdout and "unknown stage nosuch" in result.stdout
    with tarfile.open(tmp_path / "out" / "results-1.tar") as tar:  # skipped stages still leave their folder
        assert {"setup", "levers", "nosuch"} <= set(tar.getnames())
