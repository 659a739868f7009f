"""Shard commands at the edges: a full disk, a decompression bomb, names that are not UTF-8, an
output inside its source, an image folder where shards belong; one line each, nothing left behind."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import convert_folder_argv, write_imagefolder
from PIL import Image
from test_shards_bad_input import one_line_error

import fastclr.shards._convert
from fastclr import shards
from fastclr.progress import progress

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ["shards", "convert", "synthetic", "--size", 32, "--encoding", "png", "--quiet"]


def fastclr(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    """`python -m fastclr ARGS` in a fresh process (its own stdout encoding, its own memory)."""
    return subprocess.run(
        [sys.executable, "-m", "fastclr", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=300,
        **kwargs,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_during_convert_is_one_line_and_leaves_nothing(tmp_path, run_cli, monkeypatch, workers):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shards._convert.os, "fsync", full)  # forked workers inherit it
    args = [*SYNTHETIC, "--num", 40, "--shard-size", 10, "--workers", workers, "--out", tmp_path / "o"]
    code, _, err = run_cli(*args)
    line = one_line_error(code, err)
    assert f"--out {tmp_path / 'o'}: cannot write the shards (No space left on device)" in line
    assert "run the same command again" in line
    assert sorted(os.listdir(tmp_path)) == []


def test_a_really_full_small_filesystem_during_convert(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        done = fastclr(*SYNTHETIC, "--num", 3000, "--shard-size", 500, "--out", disk / "o", text=True)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot write the shards (No space left on device)" in lines[0], (
            done.stderr
        )
        assert os.listdir(disk) == []  # the partial folder is gone: the space is free again
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _max_rss_kb(*args) -> tuple[int, int, str]:
    """Peak memory (kB), exit code and stderr of `fastclr ARGS` run in a fresh process."""
    # VmHWM belongs to the process's own memory map; ru_maxrss would count the forking parent's.
    probe = (
        "import re\nfrom launch.cli import main\n"
        f"code = main({[str(a) for a in args]!r})\n"
        "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "print(peak, code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    rss, code = done.stdout.split()[-2:]
    return int(rss), int(code), done.stderr


def test_a_decompression_bomb_is_refused_from_its_header_in_bounded_memory(tmp_path, run_cli):
    write_imagefolder(tmp_path / "src", per_class=2)
    normal_rss, code, _ = _max_rss_kb(*convert_folder_argv(tmp_path / "src", tmp_path / "normal", "--quiet"))
    assert code == 0
    bomb = tmp_path / "src" / "dog" / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 18 KB declaring 144 M pixels
    assert bomb.stat().st_size < 100_000
    args = [
        *convert_folder_argv(tmp_path / "src", tmp_path / "o", "--quiet"),
    ]
    rss, code, err = _max_rss_kb(*args)
    line = one_line_error(code, err)
    assert (
        f"{bomb}: its header declares 12000 x 12000 = 144,000,000 pixels, over --max-pixels 40,000,000"
        in line
    )
    assert rss < normal_rss + 100_000, (rss, normal_rss)  # decoding it would take 432 MB for RGB alone
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.partial").exists()

    code, out, _ = run_cli(*args, "--skip-corrupt")
    assert code == 0 and "1 unreadable images skipped" in out
    assert shards.load_manifest(tmp_path / "o")["skipped"]["samples"][0]["origin"] == str(bomb)
    code, _, err = run_cli(*args, "--overwrite", "--max-pixels", 1000)
    assert "over --max-pixels 1,000" in one_line_error(code, err)


def test_max_pixels_default_is_stated_in_help(capsys):
    from fastclr.launch.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["shards", "convert", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-pixels" in text and "default 40,000,000" in text


def test_verify_checks_the_manifests_class_counts_against_the_tars(tmp_path, run_cli):
    source = shards.open_source("synthetic", None, "train", num=40, size=8, classes=4)
    shards.convert(source, tmp_path / "s", shard_size=16, progress=False)
    path = tmp_path / "s" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["class_counts"][1] += 3
    manifest["class_counts"][2] -= 3  # same total: only the per-class check sees it
    path.write_text(json.dumps(manifest))
    for extra in ([], ["--no-decode"]):
        code, _, err = run_cli("shards", "verify", tmp_path / "s", *extra)
        line = one_line_error(code, err)
        assert "class 'class_1' has 10 samples in the tars, the manifest says 13" in line


def _tree_with_undecodable_names(root: Path) -> tuple[Path, Path]:
    """An image folder whose class folder and one file are named with bytes that are not UTF-8."""
    write_imagefolder(root, per_class=2)
    klass = Path(os.fsdecode(bytes(root) + b"/caf\xe9"))
    klass.mkdir()
    good = Path(os.fsdecode(bytes(klass) + b"/\xff\xfe.png"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good, format="PNG")
    return klass, good


def test_names_that_are_not_utf8_print_under_a_strict_utf8_stdout(tmp_path):
    if sys.platform == "darwin":
        pytest.skip("macOS file systems refuse names that are not UTF-8")
    klass, image = _tree_with_undecodable_names(tmp_path / "src")
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    out = tmp_path / "o"
    done = fastclr(
        *convert_folder_argv(tmp_path / "src", out),
        env=strict,
    )
    assert done.returncode == 0, done.stderr.decode()
    for command in (["info"], ["verify"], ["info", "--json"]):
        done = fastclr("shards", *command, out, env=strict)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode()
        assert b"caf\\udce9" in done.stdout or command == ["verify"], done.stdout
    image.write_bytes(b"not a png")
    done = fastclr(
        *convert_folder_argv(tmp_path / "src", tmp_path / "p", "--quiet"),
        env=strict,
    )
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, lines
    assert "caf\\udce9/\\udcff\\udcfe.png: not a readable image" in lines[0]


def test_an_output_inside_its_source_is_refused(tmp_path, run_cli):
    write_imagefolder(tmp_path / "src", per_class=1)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out in (tmp_path / "src" / "shards", tmp_path / "src", tmp_path / "src" / "cat" / "x"):
        code, _, err = run_cli(*convert_folder_argv(tmp_path / "src", out))
        assert f"--out {out} is inside --src {tmp_path / 'src'}" in one_line_error(code, err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_an_image_folder_where_shards_belong_says_how_to_convert_it(tmp_path, run_cli):
    write_imagefolder(tmp_path / "photos", per_class=1)
    folder = tmp_path / "photos"
    fix = f"fastclr shards convert imagefolder --src {folder} --out {tmp_path / 'photos-shards'}"
    for args in (
        ["shards", "info", folder],
        ["shards", "verify", folder],
        ["pretrain", f"data.train={folder}", f"run_dir={tmp_path}/run"],
    ):
        line = one_line_error(*run_cli(*args)[::2])
        assert "holds image files, not shards" in line and fix in line, line
    assert not (tmp_path / "run").exists()
    for source in ("cifar10", "mnist", "stl10"):
        code, _, err = run_cli("shards", "convert", source, "--src", folder, "--out", tmp_path / "o")
        assert fix in one_line_error(code, err)


def test_a_folder_left_by_an_interrupted_conversion_is_named_as_such(tmp_path, run_cli):
    (tmp_path / "o").mkdir()
    code, _, err = run_cli("shards", "info", tmp_path / "o")
    assert "interrupted" not in one_line_error(code, err)
    (tmp_path / ".o.partial").mkdir()
    code, _, err = run_cli("shards", "info", tmp_path / "o")
    assert "a conversion into it was interrupted" in one_line_error(code, err)


def test_info_prints_the_source_as_lines(tmp_path, run_cli):
    write_imagefolder(tmp_path / "src", per_class=1)
    run_cli(*convert_folder_argv(tmp_path / "src", tmp_path / "o", "--quiet"))
    code, out, _ = run_cli("shards", "info", tmp_path / "o")
    assert code == 0 and "{" not in out
    lines = out.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("  source"))
    assert lines[at].split() == ["source", "name:", "imagefolder"]
    assert lines[at + 1].split() == ["root:", str(tmp_path / "src")]
    assert lines[at + 2].split() == ["ignored_non_image_files:", "0"]


class _Stream:
    def __init__(self, terminal: bool):
        self.terminal, self.text = terminal, ""

    def isatty(self) -> bool:
        return self.terminal

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_a_redrawn_bar_on_a_terminal_and_whole_lines_elsewhere(monkeypatch, terminal):
    stream = _Stream(terminal)
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress(range(50), "work", total=50, mininterval=0, miniters=1):
        pass
    if terminal:
        assert "\r" in stream.text and "work: 100%" in stream.text
    else:
        lines = stream.text.splitlines()
        assert "\r" not in stream.text and lines[-1].startswith("work: 100%|##########| 50/50")
        assert len(lines) == len(set(line.split("[")[0] for line in lines))  # no repeated count
    quiet = _Stream(terminal)
    monkeypatch.setattr(sys, "stderr", quiet)
    list(progress(range(5), "hidden", enabled=False))
    assert quiet.text == ""
