"""The `fastclr` command line, configs and launching."""
