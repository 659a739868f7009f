"""`fastclr demo` end to end, shortened: digits shards in the cache, pretrain, probe, baseline, table."""

import re


def test_demo_runs_and_prints_both_accuracies(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err = run_cli("demo", "--run-dir", tmp_path / "run", "--epochs", 2, "--supervised-epochs", 2)
    assert code == 0, err
    probe = re.search(r"SimCLR small CNN \+ linear probe\s+([\d.]+)%", out)
    supervised = re.search(r"supervised small CNN, same labels\s+([\d.]+)%", out)
    assert probe and supervised, out
    assert 10 < float(probe.group(1)) <= 100 and 0 < float(supervised.group(1)) <= 100
    assert "145 labels (10%), 360 test images" in out
    for name in ("config.yaml", "metrics.jsonl", "encoder.safetensors", "checkpoints"):
        assert (tmp_path / "run" / name).exists()
    for split in ("train", "test", "train-10pct"):
        assert (tmp_path / "cache" / "fastclr" / "digits" / split / "manifest.json").is_file()


def test_the_next_steps_the_demo_prints_are_commands_fastclr_accepts():
    import shlex

    from fastclr.launch._demo import NEXT_STEPS
    from fastclr.launch.cli import parse

    commands = [shlex.split(line) for line in NEXT_STEPS if line.strip().startswith("fastclr ")]
    assert [c[1] for c in commands] == ["shards", "shards", "pretrain", "linear"]
    assert commands[0][2:4] == ["convert", "imagefolder"]
    for command in commands:
        parse(command[1:])  # the settings object, values checked (the folders are not looked at)
    # the shards the convert lines make are the ones pretrain and linear read
    outs = {c[c.index("--out") + 1] for c in commands[:2]}
    assert "data.train=shards/train" in commands[2] and outs == {"shards/train", "shards/val"}
