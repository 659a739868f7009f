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
