"""torch.compile modes and the whole step as a CUDA graph: what the CPU can check, and the GPU checks.

Inductor takes about two minutes to compile a small CNN on the 2-core test machine, so the CPU test
compiles through AOTAutograd with the `aot_eager` backend (the same tracing, no code generation);
inductor itself is tested on the GPU.
"""

import json
import re

import pytest
import torch
from test_pretrain import config, data, losses  # noqa: F401  (data is a fixture)

from fastclr.trainers import (
    GraphedStep,
    PretrainConfig,
    TrainError,
    build_step,
    build_training,
    pretrain,
)
from fastclr.trainers._graphs import CPU_GRAPHS
from fastclr.trainers._lars import Lars
from fastclr.trainers._tracking import new_accelerator


def test_a_compiled_run_trains_as_the_eager_one(data, tmp_path, monkeypatch):  # noqa: F811
    modes = []
    compile_ = torch.compile

    def aot_eager(model, mode=None):
        modes.append(mode)
        return compile_(model, mode=mode, backend="aot_eager")

    eager = pretrain(config(data, tmp_path / "eager", epochs=1, max_steps=3))
    monkeypatch.setattr(torch, "compile", aot_eager)
    compiled = pretrain(
        config(data, tmp_path / "compiled", epochs=1, max_steps=3, compile=True, compile_mode="max-autotune")
    )
    assert modes == ["max-autotune"] and compiled["global_step"] == eager["global_step"] == 3
    ours, theirs = losses(tmp_path / "compiled"), losses(tmp_path / "eager")
    assert [s for s, _ in ours] == [1, 2, 3]
    assert [v for _, v in ours] == pytest.approx([v for _, v in theirs], rel=1e-4)


def test_settings_a_cuda_graph_cannot_capture_are_one_line(data, run_cli):  # noqa: F811
    train = f"data.train={data / 'train'}"
    for overrides, message in [
        (["optim.name=adam"], "cuda_graphs needs optim.name=lars"),
        (["precision=fp16"], "cuda_graphs needs precision=bf16 or fp32"),
        (["grad_accum=2"], "cuda_graphs needs grad_accum=1"),
        (["compile=true"], "cuda_graphs and compile are two ways to the same graphs"),
        (
            ["compile_mode=fast", "cuda_graphs=false"],
            "compile_mode='fast' is not valid; choose one of: default",
        ),
    ]:
        code, _, err = run_cli("pretrain", train, "cuda_graphs=true", *overrides)
        assert code == 1 and message in err and "Traceback" not in err, err


def test_cuda_graphs_without_a_gpu_is_one_line(data, tmp_path):  # noqa: F811
    cfg = config(data, tmp_path / "run", cuda_graphs=True, optim__name="lars")
    with pytest.raises(TrainError, match="cuda_graphs needs a CUDA device; set cuda_graphs=false"):
        pretrain(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _steps(
    graphs: bool, compile_mode: str | None, batches, precision="fp32", encoder="resnet18"
) -> tuple[list, dict]:
    """Losses (read after the run) and weights of a few steps of the trainer's step on the batches'
    device (on the CPU a graphed step runs without capture: FASTCLR_CPU_GRAPHS=1)."""
    from accelerate.utils import set_seed

    cuda = batches[0][0].device.type == "cuda"
    cfg = PretrainConfig(precision=precision, cuda_graphs=graphs, compile=compile_mode is not None)
    cfg.compile_mode = compile_mode or "default"
    cfg.model.encoder, cfg.model.hidden_dim, cfg.model.out_dim = encoder, 64, 32
    cfg.model.cifar_stem = encoder != "small_cnn"
    cfg.epochs, cfg.optim.warmup_epochs, cfg.optim.lr_scaling = 1, 3 / len(batches), "none"
    set_seed(0)
    training = build_training(cfg, new_accelerator(cpu=not cuda), 3, steps_per_epoch=len(batches))
    step = build_step(training)  # graphed when cfg.cuda_graphs; the schedule steps with it
    labels = torch.zeros(batches[0][0].shape[0], dtype=torch.long, device=batches[0][0].device)
    out = []
    for k, (view1, view2) in enumerate(batches, 1):
        if cuda and k > 3:  # after warm-up (and the graph's capture): no step may wait for the GPU
            torch.cuda.set_sync_debug_mode("error")
        try:
            out.append(step(view1, view2, labels))  # a new lr every step: a graph that baked it in drifts
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    return [loss.item() for loss in out], {k: v.float().cpu() for k, v in training.model.state_dict().items()}


def _batches(n=7, size=16, batch=32, device="cuda"):
    generator = torch.Generator().manual_seed(0)
    return [
        tuple(torch.randn(batch, 3, size, size, generator=generator).to(device) for _ in range(2))
        for _ in range(n)
    ]


def test_the_cpu_graphed_step_gives_the_eager_losses_and_weights(monkeypatch):
    """Warm-up, static buffers, copies and replays without capture: the plumbing a GPU run needs."""
    monkeypatch.setenv(CPU_GRAPHS, "1")
    batches = _batches(n=6, size=8, batch=8, device="cpu")
    eager, eager_weights = _steps(False, None, batches, encoder="small_cnn")
    graphed, graphed_weights = _steps(True, None, batches, encoder="small_cnn")
    # steps 1-2 warm-up, 3 the "capture", 4-6 replays; close, not equal: LARS's lr is a 0-d tensor
    # there (as in a graph), a float in the eager step, and the two round apart in the last bits
    assert graphed == pytest.approx(eager, rel=1e-6)
    for key, value in eager_weights.items():
        torch.testing.assert_close(graphed_weights[key], value, rtol=1e-5, atol=1e-7, msg=key)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_graphed_step_fed_unlike_its_first_batch_is_one_line(device, monkeypatch):
    """bench/train.py once fed view 2 as the labels: copy_ failed deep inside, after the capture."""
    weight = torch.nn.Parameter(torch.ones(3, device=device))
    optimizer = Lars([weight], lr=0.1)

    def step(view, labels):
        loss = (view @ weight).sum() + 0 * labels.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    graphed = GraphedStep(step, optimizer, warmup=1)
    view, labels = torch.ones(4, 3, device=device), torch.zeros(4, dtype=torch.long, device=device)
    for _ in range(3):  # warm-up, capture, replay
        graphed(view, labels)
    weights = weight.detach().clone()
    for inputs, message in [
        (
            (view, view.bfloat16()),
            f"input 2 (the labels) is bfloat16 (4, 3) on {view.device}, but the graph was captured with "
            f"int64 (4,) on {view.device}",
        ),
        ((view[:2], labels), "input 1 (view 1) is float32 (2, 3)"),
        ((view, view, labels), "captured with 2 inputs (views, then labels) and got 3"),
    ]:
        with pytest.raises(TrainError, match=re.escape(message)) as raised:
            graphed(*inputs)
        assert "\n" not in str(raised.value)
    assert torch.equal(weight.detach(), weights) and graphed.calls == 3  # refused before any work


@pytest.mark.gpu
def test_a_graphed_step_gives_the_eager_losses_and_weights():
    torch.backends.cudnn.deterministic = True
    batches = _batches()
    eager, eager_weights = _steps(False, None, batches)
    graphed, graphed_weights = _steps(True, None, batches)
    assert graphed == pytest.approx(eager, rel=1e-4)
    for key, value in eager_weights.items():
        torch.testing.assert_close(graphed_weights[key], value, rtol=1e-3, atol=1e-5, msg=key)


@pytest.mark.gpu
@pytest.mark.slow  # inductor compiles for a while: bench/gpu.sh runs it in its `compile` stage
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_a_compiled_step_on_cuda_trains_without_host_syncs(mode):
    batches = _batches()
    eager, _ = _steps(False, None, batches, precision="bf16", encoder="small_cnn")
    compiled, _ = _steps(False, mode, batches, precision="bf16", encoder="small_cnn")
    assert compiled == pytest.approx(eager, rel=0.05)  # bf16, other kernels: close, not equal
    assert json.dumps(compiled)  # finite floats


def test_a_resume_may_change_how_fast_but_not_where_the_ops_run(data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    first = pretrain(config(data, run, max_steps=3))
    assert first["stopped"] == "max_steps"
    with pytest.raises(TrainError, match="data.augment_device: checkpoint has 'auto', config has 'cpu'"):
        pretrain(config(data, run, data__augment_device="cpu"))
    faster = config(data, run, data__prefetch=3, data__num_threads=2, compile_mode="reduce-overhead")
    resumed = pretrain(faster)
    assert resumed["stopped"] is None and resumed["global_step"] == 12


@pytest.mark.parametrize("cpu", [True, pytest.param(False, marks=pytest.mark.gpu)])
def test_a_graphed_pretrain_run_logs_the_eager_runs_losses_and_probe(data, tmp_path, cpu, monkeypatch):  # noqa: F811
    """The whole loop: the probe's step is captured with the model's, its labels copied in (on the CPU
    through the same buffers without capture)."""
    monkeypatch.setenv(CPU_GRAPHS, "1" if cpu else "0")
    torch.backends.cudnn.deterministic = True
    records = {}
    for graphs in (False, True):
        run = tmp_path / f"graphs-{graphs}"
        cfg = config(data, run, cpu=cpu, max_steps=5, cuda_graphs=graphs, optim__name="lars")
        pretrain(cfg)
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        records[graphs] = [(r["step"], r["loss"], r.get("online_train_top1")) for r in lines if "loss" in r]
    assert [s for s, _, _ in records[True]] == [1, 2, 3, 4, 5]
    for (_, eager, eager_top1), (_, graphed, graphed_top1) in zip(records[False], records[True], strict=True):
        assert graphed == pytest.approx(eager, rel=1e-4) and graphed_top1 == pytest.approx(eager_top1)
