"""Markdown tables from the benchmarks' JSON, for BENCHMARKS.md.

python -m bench.table bench/results/convert.json bench/results/pipeline-cpu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _where(result: dict) -> str:
    device = result.get("device", "cpu")
    machine = f"{result['cpu']}, {result['cores']} cores" if device == "cpu" else device
    return f"{machine}; commit `{result['commit']}`; `{result['command']}`"


def convert_table(result: dict) -> str:
    lines = [
        f"Converting {result['speed'][0]['images']:,} images ({_where(result)}):",
        "",
        "| workers | images/s (best) | seconds, each repeat |",
        "|---|---|---|",
    ]
    for workers, best in result["best_images_per_s"].items():
        runs = [r["seconds"] for r in result["speed"] if str(r["workers"]) == str(workers)]
        lines.append(f"| {workers} | {best:,} | {', '.join(map(str, runs))} |")
    lines += [
        "",
        f"Size on disk (source JPEGs: {result['source_bytes'] / 2**20:.1f} MiB):",
        "",
        "| encoding | MiB | bytes per image | images/s |",
        "|---|---|---|---|",
    ]
    for row in result["size"]:
        lines.append(
            f"| {row['encoding']} | {row['MiB']} | {row['bytes_per_image']:,} | {row['images_per_s']:,} |"
        )
    return "\n".join(lines)


def pipeline_table(result: dict) -> str:
    lines = [
        f"Two-view images per second, batch {result['batch_size']}, {result['dtype']} ({_where(result)}; "
        f"torch {result['torch']}, DALI {result['dali']}):",
        "",
        "| shards | side | DALI | torchvision DataLoader | DALI / DataLoader | runs (DALI; DataLoader) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        runs = f"{row['runs']['dali']}; {row['runs']['torchvision']}"
        lines.append(
            f"| {row['dataset']} | {row['size']} | {row['dali_images_per_s']:,} | "
            f"{row['torchvision_images_per_s']:,} | {row['dali_over_torchvision']} | {runs} |"
        )
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        result = json.loads(Path(path).read_text())
        print(convert_table(result) if "speed" in result else pipeline_table(result))
        print()


if __name__ == "__main__":
    main()
