"""Datasets to WebDataset shards: tar + DALI index + manifest.json; subsets; verify.

Imports numpy, Pillow and webdataset only: never torch or DALI.
"""

from fastclr.shards._convert import ENCODINGS, MAX_PIXELS, check_output, convert
from fastclr.shards._errors import ShardError
from fastclr.shards._format import MANIFEST, load_manifest, read_samples, sha256_file
from fastclr.shards._sources import SOURCES, SPLITS, Source, open_source
from fastclr.shards._subset import subset
from fastclr.shards._verify import check, describe, rebuild_index, verify

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
    "read_samples",
    "sha256_file",
    "rebuild_index",
    "subset",
    "verify",
]
