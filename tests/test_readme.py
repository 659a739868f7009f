"""README opens with exactly two commands; `.ci/run` runs the second one's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_opens_with_an_install_and_run_and_a_test_command():
    text = (ROOT / "README.md").read_text()
    first, second = readme_commands()[:2]
    assert text.index(first) < text.index("\n## ")  # both before any section
    assert "pip install -e ." in first and "fastclr" in first
    assert "pip install -e '.[dev]'" in second and "pytest" in second


def test_ci_runs_the_readme_test_command():
    test_command = readme_commands()[1].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(test_command)}$", ci, flags=re.M), test_command
    assert 'rc" -eq 5' in ci  # "no tests collected" fails CI


def test_readme_gives_the_cpu_multi_process_launch_and_why_accelerate_cpu_starts_one(monkeypatch):
    """The README's reason holds for the installed Accelerate: `--cpu` always takes its single-process
    launcher, whatever --num_processes says."""
    import accelerate.commands.launch as accelerate_launch

    text = " ".join((ROOT / "README.md").read_text().split())
    assert "torchrun --nproc_per_node 2 -m fastclr pretrain ... cpu=true" in text
    assert "`accelerate launch --cpu --num_processes 2` starts **one** process" in text
    chosen = []
    monkeypatch.setattr(accelerate_launch, "simple_launcher", lambda args: chosen.append("simple"))
    monkeypatch.setattr(accelerate_launch, "multi_gpu_launcher", lambda args: chosen.append("multi"))
    args = accelerate_launch.launch_command_parser().parse_args(
        ["--cpu", "--num_processes", "2", "-m", "fastclr", "--help"]
    )
    accelerate_launch.launch_command(args)
    assert chosen == ["simple"]
