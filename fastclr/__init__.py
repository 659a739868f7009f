"""fastclr: SimCLR pretraining whose input pipeline (WebDataset shards + NVIDIA DALI) keeps the GPU busy.

Everything is imported from its package, under one name that no folder of yours can shadow:

    from fastclr.shards import convert, open_source, verify
    from fastclr.pipelines import create_loader
    from fastclr.encoders import build_encoder
    from fastclr.trainers import PretrainConfig, pretrain, load_encoder

`python -m fastclr` is the `fastclr` command. The packages are the repository's top-level folders
(`shards/`, `pipelines/`, `encoders/`, `trainers/`, `launch/`, `bench/`); this folder links them in,
so an editable install, a plain checkout on PYTHONPATH and a built wheel all import them as
`fastclr.<package>` (docs/design.md).
"""

__version__ = "0.1.0"
