"""LARS in multi-tensor (foreach) kernels: timm's `Lars` update, a few launches per group, not per tensor.

timm's `Lars` loops over parameters on timm up to 1.0.29 (the GPU machine's
image may hold one of those), a dozen small kernels each: on ResNet-18's 62
tensors that is hundreds of launches per step, a visible share of a 20 ms
step on a GPU. This is the same arithmetic over lists of tensors (timm 1.0.31
added such a path; this one does not depend on the version). It can also read
its learning rates from device tensors, so a CUDA graph that captured the step
still follows the schedule (`keep_lr_on_device`).

`create_optimizer("lars", ...)` builds this one; `lars_timm` is timm's, kept
as the reference it is tested against (tests/test_lars.py) and as the
benchmark's "before".
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class Lars(Optimizer):
    """LARS (You et al. 2017) with timm's semantics and defaults.

    Groups with weight decay (or `always_adapt`) get the trust ratio
    `trust_coeff * |w| / (|g| + weight_decay * |w| + eps)` (1 where either norm
    is 0, clipped to lr by `trust_clip`, LARC); then SGD momentum (buffer
    started at the first gradient, as timm does), optional Nesterov.
    """

    def __init__(
        self,
        params,
        lr: float = 1.0,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        trust_coeff: float = 0.001,
        eps: float = 1e-8,
        trust_clip: bool = False,
        always_adapt: bool = False,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"Lars: lr {lr}, momentum {momentum}, weight_decay {weight_decay} must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Lars: Nesterov momentum needs a momentum and zero dampening")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            trust_coeff=trust_coeff,
            eps=eps,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
        )
        super().__init__(params, defaults)
        self.device_lr: list[torch.Tensor] | None = None

    def keep_lr_on_device(self) -> None:
        """Read each group's lr from a 0-d tensor on its parameters' device, refreshed by `refresh_lr()`.

        A CUDA graph replays the kernels it captured with the values they had; a Python
        float lr would be baked in. The schedule still writes floats into the groups
        (timm's schedulers do); `refresh_lr()` copies them, outside the graph, before a replay.
        """
        self.device_lr = [
            torch.tensor(float(g["lr"]), device=g["params"][0].device) for g in self.param_groups
        ]

    def refresh_lr(self) -> None:
        """Copy the groups' float lr into the device tensors (a fill kernel each, no host sync)."""
        for tensor, group in zip(self.device_lr or [], self.param_groups, strict=False):
            tensor.fill_(float(group["lr"]))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                lr = self.device_lr[index] if self.device_lr is not None else group["lr"]
                self._update(group, params, lr)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor], lr) -> None:
        grads = [p.grad for p in params]
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        if weight_decay != 0 or group["always_adapt"]:
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            ratio = group["trust_coeff"] * w_norm / (g_norm + w_norm * weight_decay + group["eps"])
            ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
            if group["trust_clip"]:
                ratio = torch.clamp(ratio / lr, max=1.0)
            grads = torch._foreach_add(grads, params, alpha=weight_decay)  # p.grad is left as it was
            torch._foreach_mul_(grads, list(ratio.to(grads[0].dtype).unbind(0)))
        if momentum != 0:
            states = [self.state[p] for p in params]
            old = [i for i, s in enumerate(states) if "momentum_buffer" in s]
            if old:
                buffers = [states[i]["momentum_buffer"] for i in old]
                torch._foreach_mul_(buffers, momentum)
                torch._foreach_add_(buffers, [grads[i] for i in old], alpha=1.0 - group["dampening"])
            for state, grad in zip(states, grads, strict=True):
                if "momentum_buffer" not in state:  # the first step starts the buffer at the gradient
                    state["momentum_buffer"] = torch.clone(grad).detach()
            buffers = [s["momentum_buffer"] for s in states]
            grads = torch._foreach_add(grads, buffers, alpha=momentum) if group["nesterov"] else buffers
        if torch.is_tensor(lr):
            torch._foreach_add_(params, torch._foreach_mul(grads, -lr))
        else:
            torch._foreach_add_(params, grads, alpha=-lr)
