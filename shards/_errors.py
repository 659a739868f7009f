"""The one error type of shards/: its message is what the user reads, on one line."""


class ShardError(Exception):
    """A problem with the user's data or arguments, phrased as what to fix."""
