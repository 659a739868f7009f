"""Names the trainers, launch and benches still import; delete this module once they call the new ones.

`shard_source(folder)[1]` becomes `open_shards(folder).manifest` (better: open once, pass the ShardSet);
`Augment` (whose annotations type-check `data.augment`) becomes `augment_parameters()`.
"""

from __future__ import annotations

from pathlib import Path

from fastclr.pipelines._augment import augment_parameters
from fastclr.pipelines._shardset import ShardSet, open_shards

Augment = type(
    "Augment", (), {"__annotations__": augment_parameters(), "__doc__": "Override names and types."}
)


def shard_source(folder: str | Path | ShardSet) -> tuple[ShardSet, dict]:
    """(the opened ShardSet, its manifest)."""
    opened = open_shards(folder)
    return opened, opened.manifest
