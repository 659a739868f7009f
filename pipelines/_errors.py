"""The one error the pipelines raise for what a user can fix."""


class PipelineError(Exception):
    """A problem with the user's data or pipeline settings, phrased as what to fix."""


class PositionError(PipelineError):
    """DALI refused a saved loader position (the checkpoint's file is to blame, not the shards)."""
