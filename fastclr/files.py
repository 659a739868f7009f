"""Files written whole or not at all: every file fastclr writes goes through `write_atomic`.

A reader (a resumed run, an evaluation, `fastclr report`) then sees the old content or the new,
never a half-written file, whatever kills the writer; a full disk is an OSError naming the file
the user knows, never the temporary one, which is removed.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to a hidden temporary file beside `path`, fsync it, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
