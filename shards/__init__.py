"""Datasets to WebDataset shards: tar + DALI index + manifest.json; subsets; verify.

Imports numpy, Pillow and webdataset only: never torch or DALI.
"""

from shards._convert import ENCODINGS, MAX_PIXELS, check_output, convert
from shards._errors import ShardError
from shards._format import MANIFEST, load_manifest, read_samples, sha256_file
from shards._progress import progress
from shards._sources import SOURCES, SPLITS, Source, open_source
from shards._subset import subset
from shards._verify import check, describe, rebuild_index, verify

__all__ = [
    "ENCODINGS",
    "MANIFEST",
    "MAX_PIXELS",
    "SOURCES",
    "SPLITS",
    "ShardError",
    "Source",
    "check",
    "check_output",
    "convert",
    "describe",
    "load_manifest",
    "open_source",
    "progress",
    "read_samples",
    "sha256_file",
    "rebuild_index",
    "subset",
    "verify",
]
