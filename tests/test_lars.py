"""The multi-tensor LARS against timm's, step for step, and the device-lr mode CUDA graphs need."""

import pytest
import torch
from timm.optim import Lars as TimmLars

from fastclr.encoders import build_encoder
from fastclr.trainers import create_optimizer, create_scheduler
from fastclr.trainers._lars import Lars


def _losses_and_weights(name: str, steps: int = 4, lr_on_device: bool = False):
    torch.manual_seed(0)
    model = build_encoder("resnet18", cifar_stem=True)
    torch.manual_seed(1)
    batches = [torch.randn(4, 3, 16, 16) for _ in range(steps)]
    optimizer = create_optimizer(model, name, 0.5, 1e-2, 0.9)  # decay large enough to matter
    scheduler = create_scheduler(optimizer, total_steps=steps, warmup_steps=2, min_lr=0.0)
    if lr_on_device:
        optimizer.keep_lr_on_device()
    model.train()
    losses = []
    for step, batch in enumerate(batches, 1):
        if lr_on_device:
            optimizer.refresh_lr()
        loss = model(batch).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step_update(step)
        losses.append(loss.item())
    return optimizer, losses, model.state_dict()


@pytest.mark.parametrize("lr_on_device", [False, True])
def test_lars_matches_timms_lars_step_for_step(lr_on_device):
    ours, our_losses, our_weights = _losses_and_weights("lars", lr_on_device=lr_on_device)
    theirs, their_losses, their_weights = _losses_and_weights("lars_timm")
    assert type(ours) is Lars and type(theirs) is TimmLars
    assert [len(g["params"]) for g in ours.param_groups] == [len(g["params"]) for g in theirs.param_groups]
    assert [g["weight_decay"] for g in ours.param_groups] == [g["weight_decay"] for g in theirs.param_groups]
    assert our_losses == pytest.approx(their_losses, rel=1e-5)
    for key, value in their_weights.items():
        torch.testing.assert_close(our_weights[key], value, rtol=1e-5, atol=1e-6, msg=key)
    decayed = zip(ours.param_groups[0]["params"], theirs.param_groups[0]["params"], strict=True)
    for p_ours, p_theirs in decayed:
        torch.testing.assert_close(
            ours.state[p_ours]["momentum_buffer"], theirs.state[p_theirs]["momentum_buffer"]
        )


@pytest.mark.parametrize("options", [{"nesterov": True}, {"trust_clip": True, "always_adapt": True}])
def test_lars_options_match_timms(options):
    torch.manual_seed(0)
    weights = [torch.randn(8, 4), torch.randn(4), torch.zeros(3)]  # a zero weight keeps ratio 1
    grads = [[torch.randn_like(w) for w in weights] for _ in range(3)]
    results = []
    for cls in (Lars, TimmLars):
        params = [w.clone().requires_grad_() for w in weights]
        optimizer = cls(
            [{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}],
            lr=0.3,
            momentum=0.9,
            weight_decay=1e-2,
            **options,
        )
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
        results.append([p.detach() for p in params])
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_a_timm_lars_checkpoint_loads_into_lars():
    model = build_encoder("small_cnn")
    timm_optimizer = create_optimizer(model, "lars_timm", 0.1, 1e-6, 0.9)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    timm_optimizer.step()
    ours = create_optimizer(model, "lars", 0.1, 1e-6, 0.9)
    ours.load_state_dict(timm_optimizer.state_dict())
    param = ours.param_groups[0]["params"][0]
    torch.testing.assert_close(ours.state[param]["momentum_buffer"], param.grad)
