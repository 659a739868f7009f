"""`python -m fastclr`: the `fastclr` command (what torchrun and accelerate launch run)."""

import sys

from fastclr.launch.cli import main

sys.exit(main())
