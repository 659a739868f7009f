"""The pretraining criteria, by name: `create_loss(name, temperature=...)`.

A criterion takes the projections of every view (B x d each, in the loader's view order) and returns
the loss; `chance(global_batch, views)` is its value for an encoder that has learnt nothing, which
the loop warns about after warm-up. A new loss is a module with such a class and a line here.
"""

from __future__ import annotations

from fastclr.trainers._loss import NTXent

LOSSES = {"nt_xent": NTXent}


def create_loss(name: str, **options):
    """The criterion `name` with its options (NT-Xent: temperature)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name](**options)
