"""The whole training step in one CUDA graph: forward, NT-Xent, backward and the LARS update, replayed.

At 32 px a ResNet-18 step is hundreds of small kernels, and launching them from
Python costs more than running them. A graph launches them all at once. What
a replay needs, and what this provides:

- static inputs: each call copies the batch into buffers the graph reads;
- a learning rate the graph does not bake in: `Lars.keep_lr_on_device`, refreshed
  from the schedule's float before each replay (a fill kernel, no host sync);
- warm-up before capture (cuDNN/cuBLAS set-up, momentum buffers): the first
  `warmup` calls run the step eagerly on a side stream; they are real steps;
- autocast without its weight-cast cache (Accelerate's `AutocastKwargs(cache_enabled=False)`);
- a capture that ignores DALI's own threads (`capture_error_mode="thread_local"`).

One process, bf16 or fp32 (fp16's loss scaler reads the host), no gradient
accumulation, `lars` as the optimiser: `graphs_problem` names what is missing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastclr.trainers._lars import Lars


def graphs_problem(optimizer_name: str, precision: str, grad_accum: int, compile_model: bool) -> str | None:
    """Why the step cannot be captured with these settings (a config fix), or None."""
    if optimizer_name != "lars":
        return f"cuda_graphs needs optim.name=lars (its lr lives on the device), not {optimizer_name}"
    if precision == "fp16":
        return "cuda_graphs needs precision=bf16 or fp32 (fp16's loss scaler reads the host every step)"
    if grad_accum != 1:
        return "cuda_graphs needs grad_accum=1 (one captured step is one optimiser step)"
    if compile_model:
        return "cuda_graphs and compile are two ways to the same graphs: choose one (compile=false)"
    return None


def device_problem(device: torch.device, processes: int) -> str | None:
    """Why the step cannot be captured on this device and process count, or None."""
    if device.type != "cuda":
        return "cuda_graphs needs a CUDA device; set cuda_graphs=false to train on the CPU"
    if processes != 1:
        return f"cuda_graphs runs on one process for now, not {processes}; set cuda_graphs=false"
    return None


class GraphedStep:
    """`step(*inputs) -> loss`, captured at call `warmup + 1` and replayed from then on.

    `step` must be the full optimiser step (it may set gradients to None at its
    end: inside the graph they are temporaries). Returns a copy of the loss, on
    the device, as the eager step does.
    """

    def __init__(self, step: Callable[..., torch.Tensor], optimizer: Lars, warmup: int = 2):
        self.step, self.optimizer, self.warmup = step, optimizer, warmup
        optimizer.keep_lr_on_device()
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[torch.Tensor] = []
        self.loss: torch.Tensor | None = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        self.optimizer.refresh_lr()  # the schedule's lr for this step, outside the graph
        self.calls += 1
        if self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.step(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            loss.record_stream(torch.cuda.current_stream())
            return loss
        if self.graph is None:
            self.inputs = [x.clone() for x in inputs]  # static buffers, outside the graph's pool
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.loss = self.step(*self.inputs)  # recorded, not run: the replay below runs it
        else:
            for static, x in zip(self.inputs, inputs, strict=True):
                static.copy_(x)
        self.graph.replay()
        return self.loss.clone()  # the next replay overwrites self.loss
