"""Run `fastclr ARGS...` counting, per training step, the reads of a tensor's value to the host.

    python tests/host_reads_run.py OUT.json fastclr-args...      (under torchrun: OUT.json.<rank>)

On a GPU each such read (`.item()`, `float()`, `bool()`, `.tolist()` ...) stalls the host until
the device catches up. On the CPU nothing stalls, but the same calls are made: counting them shows
which steps of the loop would sync. A read is charged to the number of steps begun.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter

import torch

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def arm() -> tuple[Counter, dict]:
    import fastclr.trainers._loop as loop

    reads, steps = Counter(), {"begun": 0}
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            reads[steps["begun"]] += 1
            return _original(self, *args, **kwargs)

        setattr(torch.Tensor, name, counted)
    train_step = loop.train_step

    def step(*args, **kwargs):
        steps["begun"] += 1
        return train_step(*args, **kwargs)

    loop.train_step = step
    return reads, steps


if __name__ == "__main__":
    out, *argv = sys.argv[1:]
    reads, steps = arm()
    from fastclr.launch.cli import main

    code = main(argv)
    rank = os.environ.get("RANK", "0")
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"steps": steps["begun"], "reads": {str(k): v for k, v in sorted(reads.items())}}, f)
    sys.exit(code)
