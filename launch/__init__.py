"""The `fastclr` command line, configs and launching.

main(argv) -> exit code: the `fastclr` command (`python -m fastclr`).
load_pretrain(config_file, overrides) -> PretrainConfig: a pretrain config from a YAML file (a
    plain one or an experiment's pretrain step) and `key=value` overrides, checked.
"""


def main(argv: list[str] | None = None) -> int:
    from fastclr.launch.cli import main as cli

    return cli(argv)


def load_pretrain(config_file, overrides):
    from fastclr.launch._experiment import load_pretrain as load

    return load(config_file, overrides)


__all__ = ["load_pretrain", "main"]
