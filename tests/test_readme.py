"""The README is the front door: two commands before anything else, the second one CI's test command,
and short enough to read (the manual lives in docs/)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_blocks() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", README.read_text(), flags=re.S)


def test_readme_opens_with_an_install_and_run_and_a_test_command():
    text = README.read_text()
    first, second = readme_blocks()[:2]
    assert "\n" not in first and "\n" not in second  # one line each, to copy whole
    assert text.index(second) < text.index("\n## ")  # both before any section
    assert first.startswith("python3 -m venv .venv && ") and second.startswith("python3 -m venv .venv && ")
    assert "pip install -e . " in first and first.endswith("fastclr demo")
    assert "pip install -e '.[dev]'" in second and second.endswith("-m pytest")


def test_ci_runs_the_readme_test_command():
    test_command = readme_blocks()[1].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(test_command)}$", ci, flags=re.M), test_command
    assert 'rc" -eq 5' in ci  # "no tests collected" fails CI


def test_readme_is_a_front_door_not_a_manual():
    assert len(README.read_text()) < 10_000


def test_the_cpu_multi_process_launch_the_docs_give_is_the_one_that_works(monkeypatch):
    """docs/multi-gpu.md starts several CPU processes with torchrun, because Accelerate's `--cpu`
    always takes its single-process launcher, whatever --num_processes says."""
    import accelerate.commands.launch as accelerate_launch

    page = (ROOT / "docs" / "multi-gpu.md").read_text()
    assert re.search(r"^torchrun --nproc_per_node 2 -m fastclr pretrain ", page, flags=re.M)
    chosen = []
    monkeypatch.setattr(accelerate_launch, "simple_launcher", lambda args: chosen.append("simple"))
    monkeypatch.setattr(accelerate_launch, "multi_gpu_launcher", lambda args: chosen.append("multi"))
    args = accelerate_launch.launch_command_parser().parse_args(
        ["--cpu", "--num_processes", "2", "-m", "fastclr", "--help"]
    )
    accelerate_launch.launch_command(args)
    assert chosen == ["simple"]


def test_the_readme_shows_real_output_not_placeholders():
    """The blocks after the commands are pasted from real runs; a token left for one is a hole."""
    assert not re.findall(r"\b[A-Z]+_OUTPUT\b", README.read_text())
