"""The pictures (launch/_plots.py, trainers/_confusion.py), the epoch lines they are drawn from, and
one TensorBoard run per run_dir however often it resumes."""

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from test_pretrain import config, data  # noqa: F401 (data is the shards fixture)

from fastclr.launch._plots import (
    bars_figure,
    curve_figure,
    draw_curves,
    percent_limits,
    run_series,
    tsne_figure,
)
from fastclr.trainers import pretrain
from fastclr.trainers._confusion import confusion_figure


def lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def epoch_line(epoch, steps_per_epoch=27, **figures) -> dict:
    return {"step": (epoch + 1) * steps_per_epoch, "epoch": epoch, "epoch_loss": 5.0 - epoch, **figures}


MONITORED = dict(
    knn_accuracy=0.205,
    knn_k10_majority_accuracy=0.2,
    epoch_online_train_top1=0.3,
    online_val_top1=0.21,
    epoch_end_lr=0.1,
)


@pytest.fixture(scope="module")
def short_run(data, tmp_path_factory):  # noqa: F811
    """2 epochs of 6 steps with log_every=50: no log line, only epoch lines; kNN monitor and probe."""
    run_dir = tmp_path_factory.mktemp("short") / "run"
    knn = {"data__knn_bank": str(data / "train"), "data__knn_val": str(data / "test")}
    pretrain(config(data, run_dir, epochs=2, track__log_every=50, **knn))
    return run_dir


def test_the_epoch_lines_carry_the_probes_figures_and_the_rate(short_run):
    records = lines(short_run)
    assert [r["step"] for r in records] == [6, 12] and not any("loss" in r for r in records)
    for r in records:
        assert 0 <= r["epoch_online_train_top1"] <= 1 and 0 <= r["online_val_top1"] <= 1
        assert {"knn_accuracy", "knn_k10_majority_accuracy", "epoch_end_lr"} <= set(r)
    assert records[0]["epoch_end_lr"] > records[1]["epoch_end_lr"] == pytest.approx(0, abs=1e-12)


def test_a_run_without_log_lines_is_drawn_from_its_epoch_lines(short_run, tmp_path, run_cli):
    series = {(s.figure, s.quantity): s for s in run_series(lines(short_run), "run")}
    assert set(series) == {
        ("loss", "loss, epoch mean"),
        ("lr", "lr at epoch end"),
        ("accuracy", "kNN, weighted vote"),
        ("accuracy", "kNN, k=10 majority vote"),
        ("accuracy", "online probe, train"),
        ("accuracy", "online probe, val"),
    }
    assert series["loss", "loss, epoch mean"].epochs == [1.0, 2.0]
    code, out, err = run_cli("report", short_run, "--out", tmp_path / "report")
    assert code == 0, err
    text = (tmp_path / "report" / "results.md").read_text()
    for name in ("loss", "lr", "accuracy"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 1000 and f"({name}.png)" in text
    assert "skipped" not in out


def test_accuracy_shows_every_monitor_in_percent_against_whole_epochs():
    records = [epoch_line(e, **{k: v + 0.004 * e for k, v in MONITORED.items()}) for e in range(3)]
    figure = curve_figure("accuracy", [s for s in run_series(records, "run") if s.figure == "accuracy"])
    (axes,) = figure.axes
    assert axes.get_xlabel() == "epoch" and axes.get_title() == "pretraining"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == [
        "kNN, weighted vote",
        "kNN, k=10 majority vote",
        "online probe, train",
        "online probe, val",
    ]
    weighted = axes.get_lines()[0]
    assert list(weighted.get_xdata()) == [1, 2, 3]
    assert list(weighted.get_ydata()) == pytest.approx([20.5, 20.9, 21.3])  # percent, not fractions
    low, high = axes.get_ylim()
    assert high - low >= 10  # a 1-point gain is a tenth of the axis, not all of it
    figure.canvas.draw()
    ticks = [t.get_text() for t in axes.get_xticklabels() if t.get_text()]
    assert ticks and all(t.isdigit() for t in ticks)  # no "2.5"
    assert all(t.get_text().endswith("%") for t in axes.get_yticklabels() if t.get_text())


def test_percent_limits_span_ten_points_inside_0_to_100():
    assert percent_limits([20.5, 21.4]) == pytest.approx((15.95, 25.95))
    assert percent_limits([1.0, 2.0]) == (0.0, 10.0)
    assert percent_limits([99.0, 100.0]) == (90.0, 100.0)
    assert percent_limits([10.0, 90.0]) == pytest.approx((2.0, 98.0))


def test_pretraining_and_evaluations_get_a_panel_each_and_the_rate_a_log_axis_when_apart():
    logged = [
        {"step": s, "epoch": (s - 1) // 10, "loss": 6 - s / 10, "lr": 1.0 * s / 30} for s in range(1, 31)
    ]
    pretrain_lines = logged + [epoch_line(e, 10) for e in range(3)]
    evaluation = [
        {"step": e + 1, "epoch": e, "lr": 0.01, "train_loss": 1 / (e + 1), "val_top1": 0.5} for e in range(5)
    ]
    series = run_series(pretrain_lines, "pre") + run_series(evaluation, "linear")
    figure = curve_figure("lr", [s for s in series if s.figure == "lr"])
    top, bottom = figure.axes
    assert (top.get_title(), bottom.get_title()) == ("pretraining", "evaluations (each over its own epochs)")
    assert list(top.get_lines()[0].get_xdata())[:2] == [0.1, 0.2]  # log lines at step / steps per epoch
    assert top.get_yscale() == bottom.get_yscale() == "linear"  # one run in each panel
    apart = run_series(pretrain_lines, "a") + [
        s for s in run_series([{**r, "lr": r["lr"] / 100} for r in logged], "b") if s.figure == "lr"
    ]
    figure = curve_figure("lr", [s for s in apart if s.figure == "lr"])
    (axes,) = figure.axes
    assert axes.get_yscale() == "log"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["a", "b"]


def test_a_run_with_no_finished_epoch_is_drawn_against_steps():
    logged = [{"step": s, "epoch": 0, "loss": 6.0, "lr": 0.1} for s in (5, 10)]
    (axes,) = curve_figure("loss", [s for s in run_series(logged, "r") if s.figure == "loss"]).axes
    assert axes.get_xlabel() == "step" and list(axes.get_lines()[0].get_xdata()) == [5, 10]


def test_a_skipped_plot_is_said_in_one_line(tmp_path, run_cli):
    said = []
    made = draw_curves(run_series([epoch_line(0)], "r"), tmp_path, said.append)
    assert [p.name for p in made] == ["loss.png"]
    assert said == [
        "lr.png skipped: no run logged a learning rate",
        "accuracy.png skipped: no run measured an accuracy while training (the kNN monitor: "
        "data.knn_bank and data.knn_val; the online probe; or a linear / finetune evaluation)",
    ]
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps(epoch_line(0)) + "\n")
    code, out, err = run_cli("report", run, "--out", tmp_path / "report")
    assert code == 0, err
    assert "lr.png skipped: no run logged a learning rate" in out.splitlines()
    assert not (tmp_path / "report" / "lr.png").exists() and (tmp_path / "report" / "loss.png").is_file()


def test_sweep_bars_zoom_to_the_values_and_print_them():
    figure = bars_figure(
        ["head=mlp_bn", "head=linear"], {"linear top-1": [0.9491, 0.9464], "kNN": [0.93, None]}
    )
    (axes,) = figure.axes
    low, high = axes.get_ylim()
    assert 90 <= low < 93 and 94.91 < high < 97
    texts = {t.get_text() for t in axes.texts}
    assert {"94.91%", "94.64%", "93.00%", "n/a"} <= texts
    assert axes.get_title().startswith(f"axis from {low:g}%")


def test_confusion_has_values_a_colour_bar_and_the_accuracy():
    matrix = np.diag([8, 9, 10]) + 1
    figure = confusion_figure(matrix, ["cat", "dog", "eel"])
    axes, colour_bar = figure.axes
    assert axes.get_title() == "top-1 83.33% on 36 images"
    assert colour_bar.get_ylabel() == "% of the true class's images"
    assert [t.get_text() for t in axes.texts] == ["82", "9", "9", "8", "83", "8", "8", "8", "85"]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["cat (11)", "dog (12)", "eel (13)"]
    big = confusion_figure(np.eye(100, dtype=int) * 5 + 1, [f"class {k}" for k in range(100)])
    axes = big.axes[0]
    assert not axes.texts and not axes.get_xticklabels() and "top-1" in axes.get_title()


def test_tsne_names_the_classes():
    points = np.random.default_rng(0).normal(size=(40, 2))
    labels = np.arange(40) % 4
    figure = tsne_figure(points, labels, ["airplane", "bird", "cat", "deer"], "t-SNE")
    (axes,) = figure.axes
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["airplane", "bird", "cat", "deer"]
    many = tsne_figure(np.tile(points, (3, 1)), np.arange(120) % 30, [f"c{k}" for k in range(30)], "t")
    assert sorted(t.get_text() for t in many.axes[0].texts) == sorted(f"c{k}" for k in range(30))


def test_one_tensorboard_run_after_two_resumes(data, tmp_path):  # noqa: F811
    """Stopped at step 2, at step 4, the step-4 checkpoint then lost (as a kill before it was
    written): the third start resumes at step 2 and logs steps 3 and 4 again. TensorBoard sees one
    folder, the hyperparameters once, and every step once, with the values metrics.jsonl keeps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    run = tmp_path / "run"
    for max_steps in (2, 4, None):
        if max_steps is None:
            shutil.rmtree(run / "checkpoints" / "step-00000004")
        pretrain(config(data, run, epochs=1, max_steps=max_steps, track__tensorboard=True))
    events = sorted(run.rglob("events.out.tfevents.*"))
    assert {p.parent for p in events} == {run / "fastclr"} and len(events) == 3
    hparams = Counter(
        value.tag
        for path in events
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.metadata.plugin_data.plugin_name == "hparams"
    )
    assert hparams and set(hparams.values()) == {1}
    loss = EventAccumulator(str(run / "fastclr")).Reload().Scalars("loss")
    kept = [(r["step"], r["loss"]) for r in lines(run) if "loss" in r]
    assert [(e.step, e.value) for e in loss] == [(s, pytest.approx(v)) for s, v in kept]
    assert [s for s, _ in kept] == [1, 2, 3, 4, 5, 6]
