"""Datasets to WebDataset shards: tar + DALI index + manifest.json; subsets; verify.

Imports numpy, Pillow and webdataset only: never torch or DALI. Each command's settings are a
dataclass here (`ConvertConfig`, `SubsetConfig`, `VerifyConfig`, `InfoConfig`). A new dataset
source: a function returning a `Source` (`array_source` builds one from arrays), decorated with
`@register(name)`, becomes `fastclr shards convert NAME` once its module is imported.
"""

from fastclr.shards._convert import check_output, convert
from fastclr.shards._datasets import SOURCES
from fastclr.shards._errors import ShardError
from fastclr.shards._format import MANIFEST, load_manifest, read_samples, sha256_file
from fastclr.shards._options import (
    ENCODINGS,
    MAX_PIXELS,
    ConvertConfig,
    InfoConfig,
    SubsetConfig,
    VerifyConfig,
)
from fastclr.shards._sources import SPLITS, Source, array_source, open_source, register
from fastclr.shards._subset import subset
from fastclr.shards._verify import check, describe, rebuild_index, verify

__all__ = [
    "ENCODINGS",
    "ConvertConfig",
    "InfoConfig",
    "MANIFEST",
    "MAX_PIXELS",
    "SOURCES",
    "SPLITS",
    "ShardError",
    "Source",
    "SubsetConfig",
    "array_source",
    "VerifyConfig",
    "check",
    "check_output",
    "convert",
    "describe",
    "load_manifest",
    "open_source",
    "read_samples",
    "register",
    "sha256_file",
    "rebuild_index",
    "subset",
    "verify",
]
