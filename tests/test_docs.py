"""The commands the README and docs/ show are commands fastclr takes, and the pages hang together.

Every ```bash block of README.md and docs/*.md is read as shell: each `fastclr ...` call in it (also
`.venv/bin/fastclr`, `python -m fastclr`, `accelerate launch ... -m fastclr`, `torchrun ... -m
fastclr`) is parsed by the real command line, experiments and sweeps down to every step's settings,
without running anything; every repository file a command names exists, every `python -m` module is
importable. The README's quickstart runs for real on a tiny CIFAR-10 in its distributed format, then
the shard commands the docs show run on its shards. Links between the pages resolve, and no page,
config or comment points outside the repository.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import io
import itertools
import re
import shlex
import tokenize
from pathlib import Path

import pytest
from datasets import tar_gz, write_cifar10

from fastclr.launch.cli import parse

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPERATORS = {";", "&&", "||", "|", "&"}
# A quickstart pretrain is shortened to seconds on the tiny set; everything else runs as written.
TINY = {
    "pretrain": [
        "epochs=1",
        "batch_size=16",
        "optim.warmup_epochs=0",
        "data.fraction=1.0",
        "data.num_threads=1",
        "model.hidden_dim=32",
        "track.progress=false",
    ],
    "linear": ["epochs=5"],
}


def bash_blocks(page: Path) -> list[tuple[int, str]]:
    """(line of the opening fence, text) of every ```bash block."""
    text = page.read_text()
    return [
        (text[: m.start()].count("\n") + 1, m.group(1))
        for m in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    ]


def shell_commands(block: str) -> list[list[str]]:
    """The simple commands of a block, as the shell splits them: continuations joined, comments
    dropped, split at `;`, `&&`, `||`, `|` and `&`."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in OPERATORS:
                commands += [words] if words else []
                words = []
            else:
                words.append(token)
    return commands


def fastclr_argv(words: list[str]) -> list[str] | None:
    """What follows `fastclr` in a command that runs it (directly, or under a launcher)."""
    for i, word in enumerate(words):
        if word == "fastclr" and (i == 0 or words[i - 1] == "-m") or word.endswith("bin/fastclr"):
            return words[i + 1 :]
    return None


def documented(pages=PAGES) -> list[tuple[str, list[str]]]:
    """(where, words) of every shell command on the pages."""
    found = []
    for page in pages:
        for line, block in bash_blocks(page):
            for words in shell_commands(block):
                found.append((f"{page.relative_to(ROOT)}:{line}", words))
    return found


CALLS = [(where, argv) for where, words in documented() if (argv := fastclr_argv(words)) is not None]


def parse_fully(argv: list[str]):
    """The command and its settings as `fastclr` would run them; `run` and `sweep` down to each
    step of the experiment (at every point of a sweep's grid). Nothing on disk is looked at but the
    experiment files. None for `--help`."""
    from fastclr.launch import _experiment as experiment
    from fastclr.launch import _sweep as sweeps

    try:
        command, settings = parse(argv)
    except SystemExit as stop:
        assert stop.code == 0 and "--help" in argv, f"exit {stop.code}"
        return None
    if command.name == "run":
        config = experiment.load_experiment(settings.config, settings.overrides)
        experiment.build_steps(config, settings.step or None, check_paths=False)
    elif command.name == "sweep":
        config = experiment.load_experiment(settings.config, settings.overrides)
        grid = sweeps.parse_grid(config, settings.grid)
        for values in itertools.product(*grid.values()):
            point = copy.deepcopy(config)
            experiment.set_values(point, dict(zip(grid, values, strict=True)))
            experiment.build_steps(point, check_paths=False)
    return command, settings


def test_the_pages_show_commands_at_all():
    assert len(CALLS) > 40, CALLS
    assert {argv[0] for _, argv in CALLS} >= {"demo", "shards", "pretrain", "linear", "knn", "run", "sweep"}


@pytest.fixture
def disk_left_alone(monkeypatch):
    """`fastclr pretrain --config EXPERIMENT` checks its shard folders while it loads the file (a plain
    config leaves that to `main`, after parsing): here every command is only parsed."""
    import dataclasses

    from fastclr.launch import _commands

    entry = _commands.commands()["pretrain"]
    unchecked = dataclasses.replace(entry, check_files=lambda cfg: None)
    monkeypatch.setitem(_commands._REGISTRY, "pretrain", unchecked)


@pytest.mark.parametrize("argv", [argv for _, argv in CALLS], ids=[where for where, _ in CALLS])
def test_every_documented_fastclr_command_parses(argv, monkeypatch, capsys, disk_left_alone):
    monkeypatch.chdir(ROOT)  # config files are named from the repository's root, as in the docs
    assert "..." not in argv, "write the whole command: a reader copies it"
    parse_fully(argv)


def test_every_file_and_module_a_documented_command_names_exists():
    missing = []
    for where, words in documented():
        for i, word in enumerate(words):
            path = word.partition("=")[2] or word
            if re.match(r"(launch|bench|tests|docs|\.ci)/", path) and not (ROOT / path).exists():
                missing.append(f"{where}: {path}")
            if i and words[i - 1] == "-m" and word != "pytest" and importlib.util.find_spec(word) is None:
                missing.append(f"{where}: module {word}")
    assert not missing, missing


def quickstart() -> list[list[str]]:
    """The README's quickstart, in order: its `fastclr` calls but the GPU pretrain variant."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quickstart.*?(?=^## )", text, flags=re.S | re.M).group(0)
    calls = []
    for block in re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M):
        for words in shell_commands(block):
            argv = fastclr_argv(words)
            if argv is not None and not (argv[0] == "pretrain" and "cpu=true" not in argv):
                calls.append(argv)
    return calls


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder laid out as a checkout: launch/ linked in, a tiny cifar-10-python.tar.gz beside it
    (40 images a batch: 200 train, 40 test), the README's quickstart run in it."""
    import contextlib
    import os

    from fastclr.launch.cli import main

    root = tmp_path_factory.mktemp("checkout")
    (root / "launch").symlink_to(ROOT / "launch")
    folder, _ = write_cifar10(root / "src", per_batch=40)
    tar_gz(folder, root / "cifar-10-python.tar.gz")
    calls = quickstart()
    assert [c[0] for c in calls] == ["shards", "shards", "pretrain", "linear", "report"], calls
    before = Path.cwd()
    os.chdir(root)
    try:
        for argv in calls:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main([*argv, *TINY.get(argv[0], [])])
            assert code == 0, (argv, out.getvalue())
    finally:
        os.chdir(before)
    return root, calls


def test_the_readme_quickstart_runs_and_leaves_what_it_says(workspace, monkeypatch):
    root, calls = workspace
    monkeypatch.chdir(root)  # parsing pretrain opens its shard folders, relative to the checkout
    pretrain, linear, report = calls[2:]
    run_dir = root / parse([*pretrain, *TINY["pretrain"]])[1].run_dir
    assert (run_dir / "encoder.safetensors").is_file() and (run_dir / "metrics.jsonl").is_file()
    out = root / parse(linear)[1].out
    assert (out / "results.json").is_file() and (out / "confusion.png").is_file()
    assert (root / parse(report)[1].out / "results.md").is_file()


def test_the_shard_commands_the_docs_show_run_on_the_quickstarts_shards(workspace, monkeypatch, capsys):
    from fastclr.launch.cli import main

    root, _ = workspace
    monkeypatch.chdir(root)
    ran = []
    for where, argv in CALLS:
        folder = next((a for a in argv[2:] if not a.startswith("-")), "")
        shard_command = argv[:2] in (["shards", "info"], ["shards", "verify"], ["shards", "subset"])
        if shard_command and (root / folder).is_dir():
            assert main(argv) == 0, (where, capsys.readouterr())
            ran.append(argv[1])
    assert {"info", "verify", "subset"} <= set(ran), ran


def test_every_help_the_docs_show_prints_and_exits_0(capsys):
    helps = [argv for _, argv in CALLS if "--help" in argv]
    assert helps
    for argv in helps:
        assert parse_fully(argv) is None
        assert "usage: fastclr" in capsys.readouterr().out


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_links_between_the_pages_resolve():
    broken = []
    for page in [*PAGES, ROOT / "RELIABILITY.md", ROOT / "BENCHMARKS.md"]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(readme)}
    assert not [p.name for p in PAGES[1:] if p.resolve() not in linked]


# What no part of the project may lean on: files of the workspace it was built in, and the
# numbered notes and tickets of that workspace. Each is written out where it is used instead.
OUTSIDE = re.compile(r"\.\./shared|shared/(gpu|data)|PITFALLS|EXPERIMENTS\.md|DESIGN\.md|\bissues? \d")


def comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of a Python file's comments and docstrings; of other files, every line (shell
    scripts: the comments only)."""
    text = path.read_text()
    if path.suffix == ".sh":
        return [(n, line[line.find("#") :]) for n, line in enumerate(text.splitlines(), 1) if "#" in line]
    if path.suffix != ".py":
        return list(enumerate(text.splitlines(), 1))
    found = [
        (t.start[0], t.string)
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc and node.body:
                found.append((node.body[0].lineno, doc))
    return found


def project_files() -> list[Path]:
    tops = ["shards", "pipelines", "encoders", "trainers", "launch", "bench", "fastclr", "tests", "docs"]
    files = [p for top in tops for p in (ROOT / top).rglob("*") if p.is_file() and not p.is_symlink()]
    files += [*ROOT.glob("*.md"), ROOT / "pyproject.toml", ROOT / ".ci" / "run"]
    # The benchmarks' JSON records keep each command as it was run.
    return [p for p in files if "__pycache__" not in p.parts and not is_record(p)]


def is_record(path: Path) -> bool:
    return path.relative_to(ROOT).parts[:2] == ("bench", "results") and path.suffix == ".json"


def test_nothing_points_outside_the_repository():
    found = []
    for path in project_files():
        if path.suffix not in (".py", ".md", ".yaml", ".sh", ".toml", ""):
            continue
        for line, text in comments_and_docstrings(path):
            if OUTSIDE.search(text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {OUTSIDE.search(text).group(0)}")
        # A path into the workspace breaks for anyone who clones fastclr, in code as much as in prose.
        for line, text in enumerate(path.read_text().splitlines(), 1):
            if "../shared" in text and path.name != "test_docs.py":
                found.append(f"{path.relative_to(ROOT)}:{line}: ../shared")
    assert not found, found


def test_the_design_page_s_dataset_source_registers_and_converts(tmp_path):
    """docs/design.md's extension example, as written, is a source `fastclr shards convert` can use."""
    import numpy as np

    from fastclr.shards import SOURCES, convert

    page = (ROOT / "docs" / "design.md").read_text()
    example = re.search(r"```python\n(from pathlib import Path\n.*?@register.*?)```", page, flags=re.S).group(
        1
    )
    np.save(tmp_path / "images.npy", np.random.default_rng(0).integers(0, 255, (20, 8, 8, 3), dtype=np.uint8))
    np.save(tmp_path / "labels.npy", np.arange(20) % 2)
    try:
        exec(compile(example, "docs/design.md", "exec"), {})
        manifest = convert(SOURCES["my_npy"](tmp_path, "train"), tmp_path / "out")
    finally:
        SOURCES.pop("my_npy", None)
    assert manifest["num_samples"] == 20 and manifest["classes"] == ["0", "1"]
