"""The errors whose message is the whole answer: one line saying what to fix, exit 1.

Kept free of torch so `fastclr --help` imports nothing heavy.
"""

from __future__ import annotations

import sys


class ConfigError(Exception):
    pass


# Module -> its error types. A module never imported cannot have raised its error, so matching
# goes through sys.modules and imports nothing (a shards command never loads torch to fail).
USER_ERRORS = {
    "fastclr.config": ("ConfigError",),
    "fastclr.shards": ("ShardError",),
    "fastclr.pipelines": ("PipelineError",),
    "fastclr.encoders": ("EncoderError",),
    "fastclr.trainers": ("TrainError", "EvalError", "RunDirError"),
    "fastclr.launch._errors": ("ConfigError",),
}


def is_user_error(err: BaseException) -> bool:
    """A fault of the user's input or environment, phrased as what to fix (no traceback wanted)."""
    for module, names in USER_ERRORS.items():
        loaded = sys.modules.get(module)
        if loaded is not None and any(isinstance(err, getattr(loaded, n, ())) for n in names):
            return True
    return False
