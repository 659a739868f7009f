"""A damaged checkpoint never blocks a resume: the newest one that verifies is resumed, each damaged
newer one is set aside with one line naming its file, and the run ends as an uninterrupted one does.

Every row of RELIABILITY.md's "Damaged checkpoints" table is a test here. The damage is done to a copy
of one finished run (`finished`: 2 epochs of 6 steps, both checkpoints kept), as a disk, a copy or a
person would do it: truncate a file, delete it, tear it (its second half zeros, as a write that never
reached the disk) or flip one byte.
"""

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import test_faults
import torch
from conftest import torchrun
from safetensors.torch import load_file, save_file
from test_faults import epoch_losses, online_top1, pretrain_args
from test_pretrain import losses
from test_shards_bad_input import one_line_error

from fastclr.launch.cli import main
from fastclr.trainers import _checkpoint as checkpoint
from fastclr.trainers import _loss, load_encoder
from fastclr.trainers._tracking import new_accelerator

FILES = ["model.safetensors", "optimizer.pt", "probe.pt", "rank-0.json", "rng-0.safetensors", "state.json"]
DAMAGES = ["truncate", "delete", "tear", "flip"]
STEP_6, STEP_12 = checkpoint.name_of(6), checkpoint.name_of(12)
data = test_faults.data  # the module's shards: 96 synthetic images


def args(data: Path, run: Path, *extra: str) -> list[str]:
    """tests/test_faults.py's run, both its checkpoints kept (a resumed run may change keep_checkpoints)."""
    return pretrain_args(data, run, "keep_checkpoints=2", *extra)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """An uninterrupted run with its checkpoints at steps 6 and 12: what every fallback must end equal to."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(args(data, run)) == 0
    return run


def copy_of(finished: Path, tmp_path: Path) -> Path:
    """The finished run without its encoder: a rerun that resumes must train and export it again."""
    run = shutil.copytree(finished, tmp_path / "run")
    for name in ("encoder.safetensors", "encoder.json"):
        (run / name).unlink()
    return run


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    half = len(data) // 2
    if how == "truncate":
        path.write_bytes(data[:half])
    elif how == "delete":
        path.unlink()
    elif how == "tear":
        path.write_bytes(data[:half] + bytes(len(data) - half))
    elif how == "flip":
        path.write_bytes(data[:half] + bytes([data[half] ^ 0x01]) + data[half + 1 :])


def expected(name: str, how: str, size: int) -> tuple[str, ...]:
    """What the one line says of file `name` of `size` bytes damaged `how` (any of these)."""
    if how == "delete":
        return ("missing",)
    if name == "state.json":  # read first: a torn or cut JSON does not parse; a flip may still parse
        return ("not valid JSON (",) if how != "flip" else ("not valid JSON (", "sha256 mismatch")
    if how == "truncate":
        return (f"{size // 2:,} bytes where {size:,} were written",)
    return ("sha256 mismatch",)


def rehash(folder: Path) -> None:
    """Record the files' present sizes and sha256 in state.json, as if written so: faults a checksum
    cannot see (a file replaced along with its checksum, or written wrong by a fastclr with a bug)."""
    meta = json.loads((folder / "state.json").read_text())
    for name in meta["files"]:
        data = (folder / name).read_bytes()
        meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "state.json").write_bytes(checkpoint._seal(meta))


def strip_checksums(folder: Path) -> None:
    """Make `folder` a checkpoint as fastclr wrote them before checksums: state.json without them."""
    meta = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({k: meta[k] for k in ("train", "scheduler", "scaler")}))


def evil_pickle(path: Path, marker: Path) -> None:
    """A torch file whose unpickling would run `touch marker`."""

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"state": {}, "param_groups": [], "payload": Evil()}, path)


def snapshot(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def assert_ends_equal(run: Path, finished: Path) -> None:
    """Same loss at every step, epoch losses, probe figures and encoder (bit for bit) as `finished`."""
    assert losses(run) == losses(finished) and len(losses(run)) == 12
    assert epoch_losses(run) == epoch_losses(finished)
    assert online_top1(run) == online_top1(finished)
    want, got = load_file(finished / "encoder.safetensors"), load_file(run / "encoder.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    load_encoder(run)


def assert_falls_back(run_cli, data: Path, run: Path, finished: Path, file: str, why: tuple[str, ...]) -> str:
    """The rerun names step 12's damaged `file` in one line, keeps the folder aside, resumes step 6 and
    ends equal to the uninterrupted run; returns the note."""
    code, out, err = run_cli(*args(data, run))
    assert code == 0, err
    start = f"note: {run / 'checkpoints' / STEP_12} is damaged ({file}: "
    end = f"); kept aside as .damaged-{STEP_12}; resuming {STEP_6}"
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and notes[0].startswith(start) and notes[0].endswith(end), out
    assert any(reason in notes[0] for reason in why), notes[0]
    assert f"resuming {run / 'checkpoints' / STEP_6} at epoch 1, step 6 (" in out
    assert_ends_equal(run, finished)
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == [f".damaged-{STEP_12}", STEP_6, STEP_12]  # the set-aside folder is never pruned
    return notes[0]


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", FILES)
def test_verify_names_each_damaged_file_of_each_kind(finished, tmp_path, name, how):
    folder = shutil.copytree(finished / "checkpoints" / STEP_12, tmp_path / STEP_12)
    size = (folder / name).stat().st_size
    damage(folder / name, how)
    with pytest.raises(checkpoint.Damaged) as caught:
        checkpoint.verify(folder)
    assert caught.value.file == name and any(r in caught.value.why for r in expected(name, how, size))


# one run per file kind, every kind of damage among them; the single flipped byte in the weights
# resumed silently before checksums and changed the final encoder
FALLBACKS = [
    ("model.safetensors", "flip"),
    ("optimizer.pt", "truncate"),
    ("probe.pt", "tear"),
    ("rank-0.json", "truncate"),
    ("rng-0.safetensors", "tear"),
    ("state.json", "delete"),  # weights intact, metadata gone: set aside, never deleted
]


@pytest.mark.parametrize("name, how", FALLBACKS, ids=[f"{n}-{h}" for n, h in FALLBACKS])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_older_one_resumed(
    data, finished, tmp_path, run_cli, name, how
):
    run = copy_of(finished, tmp_path)
    path = run / "checkpoints" / STEP_12 / name
    size = path.stat().st_size
    damage(path, how)
    assert_falls_back(run_cli, data, run, finished, name, expected(name, how, size))
    assert (run / "checkpoints" / f".damaged-{STEP_12}").is_dir()
    if name == "state.json":  # the folder's weights are kept as they were
        aside = run / "checkpoints" / f".damaged-{STEP_12}" / "model.safetensors"
        assert aside.read_bytes() == (finished / "checkpoints" / STEP_12 / "model.safetensors").read_bytes()


NONE_INTACT = [  # damage, the file of step 12, the file of step 6
    ("truncate", "model.safetensors", "model.safetensors"),
    ("delete", "rng-0.safetensors", "state.json"),
    ("tear", "optimizer.pt", "optimizer.pt"),
    ("flip", "rank-0.json", "probe.pt"),
]


@pytest.mark.parametrize("how, newest, older", NONE_INTACT, ids=[d[0] for d in NONE_INTACT])
def test_when_no_checkpoint_verifies_the_run_is_refused_naming_each_and_nothing_moves(
    data, finished, tmp_path, run_cli, how, newest, older
):
    run = copy_of(finished, tmp_path)
    damage(run / "checkpoints" / STEP_12 / newest, how)
    damage(run / "checkpoints" / STEP_6 / older, how)
    before = snapshot(run)
    code, _, err = run_cli(*args(data, run))
    line = one_line_error(code, err)
    assert f"no checkpoint in {run / 'checkpoints'} can be resumed: {STEP_12} is damaged ({newest}: " in line
    assert f"; {STEP_6} is damaged ({older}: " in line
    assert line.endswith("restore the damaged file from a copy, or start a new run_dir (nothing was moved)")
    assert snapshot(run) == before  # a rerun refuses again instead of starting from scratch


def test_recover_leaves_a_step_folder_without_its_metadata_for_resume_to_report(tmp_path):
    """Only temp folders are removed; a folder missing state.json is reported and set aside."""
    folder = tmp_path / "checkpoints"
    (folder / STEP_12).mkdir(parents=True)
    (folder / STEP_12 / "model.safetensors").write_text("intact weights")
    (folder / f".{STEP_6}.tmp").mkdir()
    checkpoint.recover(folder)
    assert [p.name for p in folder.iterdir()] == [STEP_12]
    with pytest.raises(checkpoint.Damaged, match="state.json: missing"):
        checkpoint.verify(folder / STEP_12)


def test_a_position_dali_refuses_names_the_checkpoint_file_not_the_shards(data, finished, tmp_path, run_cli):
    """A garbled loader position whose checksum was rewritten too: DALI refuses it as the loader is built."""
    run = copy_of(finished, tmp_path)
    folder = run / "checkpoints" / STEP_12
    ranked = json.loads((folder / "rank-0.json").read_text())
    position = bytearray(base64.b64decode(ranked["loader"]))
    position[-32] ^= 0xFF  # inside DALI's serialised protobuf: it no longer parses
    ranked["loader"] = base64.b64encode(bytes(position)).decode()
    (folder / "rank-0.json").write_text(json.dumps(ranked))
    rehash(folder)
    note = assert_falls_back(
        run_cli, data, run, finished, "rank-0.json", ("DALI refuses the loader position saved in it",)
    )
    assert "shards" not in note and "the DALI pipeline failed" not in note


@pytest.mark.parametrize("verified", [True, False], ids=["checksums-rewritten", "before-checksums"])
def test_a_pickle_with_code_is_named_as_not_a_checkpoint_file_and_never_run(
    data, finished, tmp_path, run_cli, verified
):
    run = copy_of(finished, tmp_path)
    marker = tmp_path / "the-code-ran"
    evil_pickle(run / "checkpoints" / STEP_12 / "optimizer.pt", marker)
    if verified:
        rehash(run / "checkpoints" / STEP_12)
        why = "not a fastclr checkpoint file: it holds pickled code (posix.system); never load it"
        assert_falls_back(run_cli, data, run, finished, "optimizer.pt", (why,))
    else:  # the probe's file too; no older checkpoint is intact: refused naming both files
        for step in (STEP_6, STEP_12):
            strip_checksums(run / "checkpoints" / step)
        evil_pickle(run / "checkpoints" / STEP_6 / "probe.pt", marker)
        code, _, err = run_cli(*args(data, run))
        line = one_line_error(code, err)
        assert (
            f"{STEP_12} is damaged (optimizer.pt: not a fastclr checkpoint file: it holds pickled code"
            in line
        )
        assert f"{STEP_6} is damaged (probe.pt: not a fastclr checkpoint file" in line
        assert "weights_only" not in line
    assert not marker.exists()


def test_a_checkpoint_with_non_finite_weights_is_set_aside_and_an_older_one_resumed(
    data, finished, tmp_path, run_cli
):
    run = copy_of(finished, tmp_path)
    folder = run / "checkpoints" / STEP_12
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    weights[name][0] = float("nan")
    save_file(weights, folder / "model.safetensors")
    rehash(folder)  # the files verify: only their content is wrong
    assert_falls_back(
        run_cli, data, run, finished, "model.safetensors", (f"holds non-finite weights ({name})",)
    )


def test_non_finite_weights_or_optimiser_state_in_every_checkpoint_are_refused_naming_them(
    data, finished, tmp_path, run_cli
):
    run = copy_of(finished, tmp_path)
    weights = load_file(run / "checkpoints" / STEP_12 / "model.safetensors")
    weights = {
        k: torch.full_like(v, float("inf")) if v.is_floating_point() else v for k, v in weights.items()
    }
    save_file(weights, run / "checkpoints" / STEP_12 / "model.safetensors")
    optim = torch.load(run / "checkpoints" / STEP_6 / "optimizer.pt", weights_only=True)
    optim["state"][0]["exp_avg_sq"][0] = float("nan")
    torch.save(optim, run / "checkpoints" / STEP_6 / "optimizer.pt")
    for step in (STEP_6, STEP_12):
        rehash(run / "checkpoints" / step)
    code, _, err = run_cli(*args(data, run))
    line = one_line_error(code, err)
    assert f"{STEP_12} is damaged (model.safetensors: holds non-finite weights (" in line
    assert (
        f"{STEP_6} is damaged (optimizer.pt: holds non-finite optimiser state (state.0.exp_avg_sq))" in line
    )


def test_checkpoints_written_before_checksums_still_resume_and_name_a_damaged_file(
    data, finished, tmp_path, run_cli
):
    run = copy_of(finished, tmp_path)
    for step in (STEP_6, STEP_12):
        strip_checksums(run / "checkpoints" / step)
    damage(run / "checkpoints" / STEP_12 / "model.safetensors", "truncate")
    code, out, err = run_cli(*args(data, run))
    assert code == 0, err
    assert (
        f"note: {run / 'checkpoints' / STEP_12} is damaged (model.safetensors: cannot be read (Error while "
        "deserializing header: incomplete metadata, file not fully covered)); kept aside as "
        f".damaged-{STEP_12}; resuming {STEP_6}"
    ) in out.splitlines()
    assert (
        "at epoch 1, step 6 (written before checksums, not verified; weights and optimiser state finite)"
        in out
    )
    assert_ends_equal(run, finished)


def test_a_nan_loss_names_the_verified_checkpoint_the_run_resumed_from(
    data, finished, tmp_path, run_cli, monkeypatch
):
    run = copy_of(finished, tmp_path)
    shutil.rmtree(run / "checkpoints" / STEP_12)
    nt_xent = _loss.nt_xent
    monkeypatch.setattr(
        _loss, "nt_xent", lambda *views, temperature: nt_xent(*views, temperature=temperature) * float("nan")
    )
    code, _, err = run_cli(*args(data, run))
    line = one_line_error(code, err)
    resumed = run / "checkpoints" / STEP_6
    assert (
        f"loss became nan by step 7 (epoch 1); stopped without saving; last good checkpoint: {resumed}; "
        in line
    )
    assert f"this run resumed from {resumed}, whose files verified and whose weights and optimiser" in line


class NanGrad(torch.autograd.Function):
    """The identity forward; NaN gradients backward: the loss stays finite, the weights do not."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def test_weights_that_became_non_finite_are_never_saved(data, tmp_path, run_cli, monkeypatch):
    calls, nt_xent = [], _loss.nt_xent

    def nan_gradients_at_step_6(*views, temperature):
        calls.append(1)
        loss = nt_xent(*views, temperature=temperature)
        return NanGrad.apply(loss) if len(calls) == 6 else loss

    monkeypatch.setattr(_loss, "nt_xent", nan_gradients_at_step_6)
    run = tmp_path / "run"
    code, _, err = run_cli(*args(data, run))
    line = one_line_error(code, err)
    assert "became non-finite by step 6; not saved; last good checkpoint: none" in line
    assert not (run / "checkpoints").exists() or list((run / "checkpoints").iterdir()) == []


def test_pruning_keeps_the_checkpoint_just_written_and_never_a_set_aside_one(tmp_path):
    """Older checkpoints beyond `keep` go; a newer one than the one written is neither counted nor
    pruned, so a damaged newer one can never displace the only good one; set-aside folders stay."""
    accelerator = new_accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    folder = tmp_path / "checkpoints"

    def save(step: int, keep: int) -> Path:
        state = checkpoint.TrainState(global_step=step)
        return checkpoint.save(folder, accelerator, model, optimizer, scheduler, state, b"", keep)

    for step in (4, 6, 12):
        save(step, keep=3)
    checkpoint.set_aside(folder / checkpoint.name_of(4))
    damage(folder / STEP_12 / "model.safetensors", "flip")  # damaged after it was written
    save(8, keep=1)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f".damaged-{checkpoint.name_of(4)}", checkpoint.name_of(8), STEP_12]
    checkpoint.verify(folder / checkpoint.name_of(8))


def test_setting_aside_twice_keeps_both_folders(tmp_path):
    for n in range(2):
        (tmp_path / STEP_12).mkdir()
        (tmp_path / STEP_12 / "n").write_text(str(n))
        checkpoint.set_aside(tmp_path / STEP_12)
    aside = [tmp_path / f".damaged-{STEP_12}", tmp_path / f".damaged-{STEP_12}.2"]
    assert [p.joinpath("n").read_text() for p in aside] == ["0", "1"]


@pytest.mark.multiproc
def test_a_position_refused_on_one_rank_makes_every_rank_resume_the_older_checkpoint(data, tmp_path):
    """Rank 1's loader position in step 12 is garbled (its checksum rewritten): only rank 1's DALI
    refuses it, and both ranks fall back to step 6 together, ending as an uninterrupted 2-process run."""
    reference, run = tmp_path / "reference", tmp_path / "run"
    done = torchrun(29551, "-m", "fastclr", *args(data, reference, "batch_size=8"))
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.copytree(reference, run)
    folder = run / "checkpoints" / STEP_12
    ranked = json.loads((folder / "rank-1.json").read_text())
    position = bytearray(base64.b64decode(ranked["loader"]))
    position[-32] ^= 0xFF
    ranked["loader"] = base64.b64encode(bytes(position)).decode()
    (folder / "rank-1.json").write_text(json.dumps(ranked))
    rehash(folder)
    second = torchrun(29551, "-m", "fastclr", *args(data, run, "batch_size=8"))
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "is damaged (rank-1.json: DALI refuses the loader position saved in it (" in out, out
    assert f"resuming {run / 'checkpoints' / STEP_6} at epoch 1, step 6" in out, out
    assert losses(run) == losses(reference)
    want, got = load_file(reference / "encoder.safetensors"), load_file(run / "encoder.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_exporting_a_running_run_s_encoder_passes_over_a_damaged_newest_checkpoint(
    data, finished, tmp_path, capsys
):
    """time-to-accuracy evaluates a run while it trains: it gets the newest checkpoint that verifies."""
    from fastclr.launch import load_pretrain
    from fastclr.trainers import export_checkpoint_encoder
    from fastclr.trainers._errors import TrainError

    run = copy_of(finished, tmp_path)
    cfg = load_pretrain(None, args(data, run)[1:])
    damage(run / "checkpoints" / STEP_12 / "model.safetensors", "flip")
    out = export_checkpoint_encoder(cfg, tmp_path / "export")
    said = capsys.readouterr().out
    assert f"passed over damaged checkpoint(s) {STEP_12} (model.safetensors: sha256 mismatch)" in said
    assert f"exporting {STEP_6}" in said
    weights = load_file(run / "checkpoints" / STEP_6 / "model.safetensors")
    exported = load_file(out / "encoder.safetensors")
    assert all(torch.equal(exported[k], weights[f"encoder.{k}"]) for k in exported)
    damage(run / "checkpoints" / STEP_6 / "state.json", "truncate")
    with pytest.raises(TrainError, match=f"none usable, {STEP_12} .*; {STEP_6} \\(state.json"):
        export_checkpoint_encoder(cfg, tmp_path / "export-2")
