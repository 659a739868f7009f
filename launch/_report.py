"""`fastclr report DIR...`: one markdown table over runs and evaluations, curves, a t-SNE map.

A directory counts if it holds results.json (an evaluation) or metrics.jsonl
(a pretrain run); subdirectories are searched too, so a pretrain run with its
evaluations inside reports all of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


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
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(results: list[Path], pretrains: list[Path]) -> str:
    rows = ["| experiment | encoder | protocol | data | accuracy | time |", "|---|---|---|---|---|---|"]
    for folder in pretrains:
        records = read_jsonl(folder / "metrics.jsonl")
        knn = [r["knn_accuracy"] for r in records if "knn_accuracy" in r]
        seconds = sum(r.get("epoch_seconds", 0) for r in records)
        info = (
            json.loads((folder / "encoder.json").read_text()) if (folder / "encoder.json").is_file() else {}
        )
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


def curves(metric_files: list[Path], out: Path, labels: dict[Path, str] | None = None) -> list[Path]:
    """loss.png, lr.png and accuracy.png: every run that logged the quantity, one line each
    (labelled by `labels`, default the run's folder name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for name, keys in [
        ("loss", ("loss", "train_loss")),
        ("lr", ("lr",)),
        ("accuracy", ("knn_accuracy", "val_top1")),
    ]:
        figure, axes = plt.subplots(figsize=(7, 4))
        drawn = 0
        for path in metric_files:
            records = read_jsonl(path)
            for key in keys:
                points = [(r["step"], r[key]) for r in records if key in r]
                if points:
                    axes.plot(
                        *zip(*points, strict=True),
                        label=f"{(labels or {}).get(path, path.parent.name)} {key}",
                    )
                    drawn += 1
        if drawn:
            axes.set_xlabel("step")
            axes.set_ylabel(name)
            axes.legend(fontsize=7)
            figure.tight_layout()
            figure.savefig(out / f"{name}.png", dpi=100)
            made.append(out / f"{name}.png")
        plt.close(figure)
    return made


def tsne_map(encoder_path: Path, data: Path, out: Path, samples: int = 2000, seed: int = 0) -> Path:
    """Features of up to `samples` images of `data`, embedded in 2-D by t-SNE, coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

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
    figure, axes = plt.subplots(figsize=(6, 6))
    scatter = axes.scatter(points[:, 0], points[:, 1], c=labels[keep].numpy(), cmap="tab10", s=4)
    axes.legend(*scatter.legend_elements(), fontsize=7, loc="best")
    axes.set_title(f"t-SNE of {encoder_path} features on {data.name}")
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    figure.savefig(out / "tsne.png", dpi=100)
    plt.close(figure)
    return out / "tsne.png"


def report(
    dirs: list[Path], out: Path, tsne_encoder: Path | None = None, tsne_data: Path | None = None
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
    figures = curves(metric_files, out)
    if tsne_encoder is not None and tsne_data is not None:
        figures.append(tsne_map(tsne_encoder, tsne_data, out))
    text = "# fastclr report\n\n"
    if experiments := experiments_table(dirs):
        text += "## Experiments\n\n" + experiments + "\n\n## Runs\n\n"
    text += table(results, pretrains) + "\n\n"
    text += "".join(f"![{p.stem}]({p.name})\n\n" for p in figures)
    (out / "results.md").write_text(text)
    return out / "results.md"
