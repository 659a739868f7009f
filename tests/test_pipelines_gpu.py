"""The same loaders on a GPU: mixed (nvJPEG) decoding, outputs on the device. Skipped without CUDA."""

import pytest
import torch
from test_pipelines import MULTI_CROP, SIZE, id_shards, pixels_of

from fastclr.pipelines import create_loader, rank_share

pytestmark = pytest.mark.gpu

ON_GPU = dict(device="cuda", dtype=torch.bfloat16, channels_last=True)  # what training asks for


@pytest.mark.parametrize("augment_device", ["gpu", "cpu"])  # cpu: DALI's CPU ops, views copied over
@pytest.mark.parametrize("encoding", ["jpeg", "png", "raw"])
def test_pretrain_views_are_made_on_the_gpu(tmp_path, encoding, augment_device):
    folder, _ = id_shards(tmp_path, 64, encoding=encoding)
    loader = create_loader(
        "pretrain", folder, batch_size=16, size=SIZE, **ON_GPU, augment_device=augment_device
    )
    assert loader.augment_device == augment_device
    view1, view2, label = next(iter(loader))
    assert view1.device.type == "cuda" and label.device.type == "cuda"
    assert view1.dtype == torch.bfloat16 and view1.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(view1, view2)


def test_n_views_and_small_views_on_the_gpu(tmp_path):
    folder, _ = id_shards(tmp_path, 32, encoding="jpeg")
    loader = create_loader("pretrain", folder, batch_size=16, size=SIZE, **ON_GPU, **MULTI_CROP)
    *views, label = next(iter(loader))
    assert [tuple(v.shape) for v in views] == [(16, 3, SIZE, SIZE)] * 4 + [(16, 3, 8, 8)] * 3
    assert all(v.device.type == "cuda" and v.dtype == torch.bfloat16 for v in views)
    assert not any(torch.equal(a, b) for i, a in enumerate(views) for b in views[i + 1 :])


@pytest.mark.parametrize("augment_device", ["gpu", "cpu"])
def test_gpu_val_is_exact_and_matches_the_pixels(tmp_path, augment_device):
    folder, pixels = id_shards(tmp_path, 53, encoding="png")
    seen = []
    for rank in range(2):
        loader = create_loader(
            "val",
            folder,
            batch_size=8,
            size=SIZE,
            device="cuda",
            rank=rank,
            world_size=2,
            augment_device=augment_device,
        )
        count = 0
        for image, ids in loader:
            got = pixels_of(image.cpu(), folder).numpy()
            assert abs(got - pixels[ids.cpu().numpy()]).max() <= 1.0
            seen += ids.tolist()
            count += len(ids)
        assert count == rank_share(53, rank, 2)
    assert sorted(seen) == list(range(53))
