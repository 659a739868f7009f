"""The whole training step in one CUDA graph: forward, NT-Xent, backward and the LARS update, replayed.

At 32 px a ResNet-18 step is hundreds of small kernels, and launching them from
Python costs more than running them. A graph launches them all at once. What
a replay needs, and what this provides:

- static inputs: each call checks the batch against the buffers the graph reads
  (shape, dtype, device: one line naming the input, not `copy_`'s traceback) and
  copies it in;
- a learning rate the graph does not bake in: `Lars.keep_lr_on_device`, refreshed
  from the schedule's float before each replay (a fill kernel, no host sync);
- warm-up before capture (cuDNN/cuBLAS set-up, momentum buffers): the first
  `warmup` calls run the step eagerly on a side stream; they are real steps;
- autocast without its weight-cast cache (Accelerate's `AutocastKwargs(cache_enabled=False)`);
- a capture that ignores DALI's own threads (`capture_error_mode="thread_local"`).

One process, bf16 or fp32 (fp16's loss scaler reads the host), no gradient
accumulation, `lars` as the optimiser: `graphs_problem` names what is missing.

On the CPU (`FASTCLR_CPU_GRAPHS=1`; `bash bench/gpu.sh dry-run` sets it) the same
object runs without capture: the same warm-up count, static buffers, checks and
copies, each "replay" an eager call of the step on the static buffers. Its losses
are the eager step's; it proves the plumbing a GPU run needs, not a graph's speed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from fastclr.trainers._errors import TrainError
from fastclr.trainers._lars import Lars

CPU_GRAPHS = "FASTCLR_CPU_GRAPHS"  # "1": cuda_graphs=true on the CPU runs GraphedStep without capture


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
    if device.type != "cuda" and os.environ.get(CPU_GRAPHS) != "1":
        return "cuda_graphs needs a CUDA device; set cuda_graphs=false to train on the CPU"
    if processes != 1:
        return f"cuda_graphs runs on one process for now, not {processes}; set cuda_graphs=false"
    return None


def _describe(x: torch.Tensor) -> str:
    return f"{str(x.dtype).removeprefix('torch.')} {tuple(x.shape)} on {x.device}"


class GraphedStep:
    """`step(*views, labels) -> loss`, captured at call `warmup + 1` and replayed from then on.

    `step` must be the full optimiser step (it may set gradients to None at its
    end: inside the graph they are temporaries). Returns a copy of the loss, on
    the device, as the eager step does. Captures on CUDA; elsewhere runs the
    same bookkeeping eagerly (module docstring).
    """

    def __init__(self, step: Callable[..., torch.Tensor], optimizer: Lars, warmup: int = 2):
        self.step, self.optimizer, self.warmup = step, optimizer, warmup
        optimizer.keep_lr_on_device()
        self.capture = optimizer.param_groups[0]["params"][0].device.type == "cuda"
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[torch.Tensor] = []  # the static buffers, made at the first graphed call
        self.loss: torch.Tensor | None = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.inputs:
            self._check(inputs)  # before any work: a mismatch leaves the step untouched
        self.calls += 1
        self.optimizer.refresh_lr()  # the schedule's lr for this step, outside the graph
        if self.calls <= self.warmup:
            return self._eager(inputs)
        if not self.inputs:
            self.inputs = [x.clone() for x in inputs]  # static buffers, outside the graph's pool
            if self.capture:
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                    self.loss = self.step(*self.inputs)  # recorded, not run: the replay below runs it
        else:
            for static, x in zip(self.inputs, inputs, strict=True):
                static.copy_(x)
        if self.capture:
            self.graph.replay()
        else:
            self.loss = self.step(*self.inputs)  # the replay without a graph: the step on the buffers
        return self.loss.clone()  # the next replay overwrites self.loss

    def _eager(self, inputs) -> torch.Tensor:
        if not self.capture:
            return self.step(*inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loss = self.step(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        loss.record_stream(torch.cuda.current_stream())
        return loss

    def _check(self, inputs) -> None:
        """Each input against its static buffer: copy_ would fail deep inside, or convert silently."""
        if len(inputs) != len(self.inputs):
            raise TrainError(
                f"the graphed step was captured with {len(self.inputs)} inputs (views, then labels) "
                f"and got {len(inputs)}; feed every step the same number of views"
            )
        for index, (static, x) in enumerate(zip(self.inputs, inputs, strict=True)):
            if (x.shape, x.dtype, x.device) != (static.shape, static.dtype, static.device):
                name = "the labels" if index == len(inputs) - 1 else f"view {index + 1}"
                raise TrainError(
                    f"the graphed step's input {index + 1} ({name}) is {_describe(x)}, but the graph "
                    f"was captured with {_describe(static)}; every step must get batches like the first "
                    "(same batch size, dtype and device)"
                )
