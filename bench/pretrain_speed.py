"""`fastclr pretrain`'s logged speed beside bench/train.py's end-to-end figure for the same settings.

    python -m fastclr.bench.pretrain_speed --run-dir runs/r18 --bench train-levers.json --json out.json

Both count two-view images per second across all processes (one image = both
its views): bench/train.py times batch after batch between two synchronisations;
pretrain logs images / seconds per window of log_every steps, loader waits, logging
and checkpoints included. The run's first epoch (compilation, pipeline fill) is
left out; reported are the median window, the data-wait fraction and the epoch
seconds, beside the first bench row of the run's own settings (its config.yaml:
model, batch, optimiser, compile, cuda_graphs, prefetch, and where its DALI ops
ran, `auto` resolved on this machine as the run resolved it); `--match key=value`
adds or overrides fields.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from fastclr.bench.convert import environment, write_results
from fastclr.trainers import read_metrics


def logged_speed(metrics: Path, skip_epochs: int = 1) -> dict:
    """Median images/s and data wait of the windows logged after the first `skip_epochs` epochs."""
    records = read_metrics(metrics)  # a torn last line or a line that is no record is left out, and said
    windows = [r for r in records if "images_per_s" in r and r["epoch"] >= skip_epochs]
    if not windows:
        raise SystemExit(f"{metrics}: no window logged after epoch {skip_epochs - 1}; train longer")
    return {
        "images_per_s": round(statistics.median(r["images_per_s"] for r in windows), 1),
        "data_wait": round(statistics.median(r["data_wait"] for r in windows), 4),
        "windows": len(windows),
        "epoch_seconds": [round(r["epoch_seconds"], 2) for r in records if "epoch_seconds" in r],
    }


def _value(text: str):
    return json.loads(text) if text in ("true", "false", "null") or text.replace(".", "").isdigit() else text


def run_settings(run: Path, gpu: bool) -> dict:
    """The bench row fields of the run's settings (config.yaml), {} for a run without one."""
    if not (run / "config.yaml").is_file():
        return {}
    from omegaconf import OmegaConf

    from fastclr.pipelines import augment_on

    cfg = OmegaConf.load(run / "config.yaml")
    return {
        "model": cfg.model.encoder,
        "batch_size": cfg.batch_size,
        "optimizer": cfg.optim.name,
        "compile": cfg.compile,
        "cuda_graphs": cfg.cuda_graphs,
        "prefetch": cfg.data.prefetch,
        "augment_device": augment_on(cfg.data.augment_device, cfg.data.size, gpu),  # as the bench names it
    }


def bench_row(result: dict, wanted: dict) -> dict:
    """The first row whose fields equal every one of `wanted`."""
    for row in result["rows"]:
        if all(row.get(key) == value for key, value in wanted.items()):
            return row
    raise SystemExit(
        f"no bench row has {wanted}; rows: {[{k: r.get(k) for k in wanted} for r in result['rows']]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--bench", required=True, help="a bench/train.py JSON")
    parser.add_argument(
        "--match", nargs="*", default=[], help="key=value fields of the bench row, beside the run's"
    )
    parser.add_argument("--skip-epochs", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    run = Path(args.run_dir)
    bench = json.loads(Path(args.bench).read_text())
    wanted = run_settings(run, bench["device"] != "cpu")
    wanted.update({key: _value(value) for key, value in (item.split("=", 1) for item in args.match)})
    row = bench_row(bench, wanted)
    pretrain = logged_speed(run / "metrics.jsonl", args.skip_epochs)
    end_to_end = row["modes"]["dali"]["images_per_s"]
    results = {
        "command": " ".join(["python -m fastclr.bench.pretrain_speed", *sys.argv[1:]]),
        **environment(),
        "device": bench["device"],
        "run_dir": str(run),
        "config": (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else None,
        "pretrain": pretrain,
        "matched": wanted,
        "bench": {
            "command": bench["command"],
            "row": {k: v for k, v in row.items() if k != "modes"},
            "dali_images_per_s": end_to_end,
            "model_images_per_s": row["modes"].get("model", {}).get("images_per_s"),
        },
        "pretrain_over_bench": round(pretrain["images_per_s"] / end_to_end, 3),
    }
    write_results(results, args.json)


if __name__ == "__main__":
    main()
