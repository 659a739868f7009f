"""`fastclr report DIR...`: one markdown table over runs and evaluations, curves, a t-SNE map.

A directory counts if it holds results.json (an evaluation) or metrics.jsonl
(a pretrain run); subdirectories are searched too, so a pretrain run with its
evaluations inside reports all of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fastclr.files import write_atomic


def _runs(dirs: list[Path]) -> tuple[list[Path], list[Path]]:
    results, metrics = set(), set()
    for folder in dirs:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such directory")
        results.update(p.parent for p in folder.rglob("results.json"))
        metrics.update(
            p.parent for p in folder.rglob("metrics.jsonl") if not (p.parent / "results.json").exists()
        )
    if not results and not metrics:
        raise FileNotFoundError(f"no results.json or metrics.jsonl under {', '.join(map(str, dirs))}")
    return sorted(results), sorted(metrics)


def read_jsonl(path: Path) -> list[dict]:
    """The records of a metrics.jsonl: `trainers.read_metrics` (a line that is no record is left out
    and said in one line, so every record's `step` and figures are numbers)."""
    from fastclr.trainers import read_metrics

    return read_metrics(path)


def _encoder_info(folder: Path) -> dict:
    """The run's checked encoder.json, or {} (and one line saying why) when it is missing or bad."""
    from fastclr.trainers import EvalError, read_encoder_info

    if not (folder / "encoder.json").is_file():
        return {}
    try:
        return read_encoder_info(folder / "encoder.json", trust_unhashed=True, say=lambda _: None)
    except EvalError as err:
        print(f"note: {err}; its row shows '?'")
        return {}


def table(results: list[Path], pretrains: list[Path]) -> str:
    rows = ["| experiment | encoder | protocol | data | accuracy | time |", "|---|---|---|---|---|---|"]
    for folder in pretrains:
        records = read_jsonl(folder / "metrics.jsonl")
        knn = [r["knn_accuracy"] for r in records if "knn_accuracy" in r]
        seconds = sum(r.get("epoch_seconds", 0) for r in records)
        info = _encoder_info(folder)
        rows.append(
            f"| {folder.name} | {info.get('encoder', '?')} | pretrain (kNN monitor) | "
            f"{info.get('pretrained_on', '?')} | {f'{knn[-1]:.2%}' if knn else 'n/a'} | {seconds:.0f} s |"
        )
    for folder in results:
        r = json.loads((folder / "results.json").read_text())
        encoder = r.get("model") or (Path(r["encoder"]).name if r.get("encoder") else "pixels")
        data = r.get("val") or r.get("data", "?")
        rows.append(
            f"| {folder.name} | {encoder} | {r['protocol']} | {data} | {r['top1']:.2%} | "
            f"{r.get('seconds', 0):.0f} s |"
        )
    return "\n".join(rows)


def experiments_table(dirs: list[Path]) -> str:
    """One row per experiment run (`fastclr run` / a sweep point): the reported figure beside ours."""
    records = sorted({p for folder in dirs for p in folder.rglob("experiment.json")})
    if not records:
        return ""
    rows = ["| experiment | reproduces | reported | measured |", "|---|---|---|---|"]
    for path in records:
        record = json.loads(path.read_text())
        measured = [
            f"{name} {step['result'][key]:.2%}"
            for name, step in record["steps"].items()
            for key in ("top1", "knn")
            if step["result"].get(key) is not None
        ]
        name = record.get("name") or path.parent.name
        if path.parent.name != name:  # a sweep point: its folder says which
            name = f"{name} ({path.parent.name})"
        rows.append(
            f"| {name} | {record.get('reproduces', '')} | {record.get('reported', '')} | "
            f"{'; '.join(measured) or 'n/a'} |"
        )
    return "\n".join(rows)


def curves(
    metric_files: list[Path], out: Path, labels: dict[Path, str] | None = None, say=print
) -> list[Path]:
    """loss.png, lr.png and accuracy.png (launch/_plots.py): every run's lines, labelled by `labels`
    (default: the run's folder name); one line said for each figure no run has data for."""
    from fastclr.launch._plots import draw_curves, run_series

    series = [
        line
        for path in metric_files
        for line in run_series(read_jsonl(path), (labels or {}).get(path, path.parent.name))
    ]
    return draw_curves(series, out, say)


def tsne_map(encoder_path: Path, data: Path, out: Path, samples: int = 2000, seed: int = 0) -> Path:
    """Features of up to `samples` images of `data`, embedded in 2-D by t-SNE, coloured and named by
    class (the shards' class names)."""
    from sklearn.manifold import TSNE

    from fastclr import shards
    from fastclr.launch._plots import save_png, tsne_figure
    from fastclr.pipelines import create_loader
    from fastclr.shards import load_manifest
    from fastclr.trainers import extract_features, load_encoder, same_channels

    encoder, info = load_encoder(encoder_path)
    same_channels(info["in_chans"], load_manifest(data), f"the encoder {encoder_path}", data)
    loader = create_loader("val", data, batch_size=256, size=info["image_size"], channels=info["in_chans"])
    features, labels = extract_features(encoder, loader, desc=f"t-SNE: features of {data}")
    keep = np.random.default_rng(seed).permutation(len(labels))[:samples]
    print(f"t-SNE: embedding {len(keep):,} of {len(labels):,} features in 2-D (sklearn)", flush=True)
    points = TSNE(2, random_state=seed, init="pca", perplexity=min(30, len(keep) - 1)).fit_transform(
        features[keep].numpy()
    )
    title = f"t-SNE of {Path(encoder_path).name} features on {len(keep)} images of {data.name}"
    figure = tsne_figure(points, labels[keep].numpy(), shards.load_manifest(data)["classes"], title)
    return save_png(figure, out / "tsne.png")


def report(
    dirs: list[Path],
    out: Path,
    tsne_encoder: Path | None = None,
    tsne_data: Path | None = None,
    say=print,
) -> Path:
    """Write out/results.md (the table and the figures) and return it."""
    results, pretrains = _runs(dirs)
    out.mkdir(parents=True, exist_ok=True)
    metric_files = sorted(
        {
            *(p / "metrics.jsonl" for p in pretrains),
            *(p / "metrics.jsonl" for p in results if (p / "metrics.jsonl").is_file()),
        }
    )
    figures = curves(metric_files, out, say=say)
    if tsne_encoder is not None and tsne_data is not None:
        figures.append(tsne_map(tsne_encoder, tsne_data, out))
    text = "# fastclr report\n\n"
    if experiments := experiments_table(dirs):
        text += "## Experiments\n\n" + experiments + "\n\n## Runs\n\n"
    text += table(results, pretrains) + "\n\n"
    text += "".join(f"![{p.stem}]({p.name})\n\n" for p in figures)
    write_atomic(out / "results.md", text)
    return out / "results.md"
