"""DALI pipelines on the CPU: shapes, views, seeds, ranks, exact val, ops and presets, bad input."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from nvidia.dali import fn, types
from torchvision.transforms import v2

from fastclr import shards
from fastclr.pipelines import (
    OPS,
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    Op,
    PipelineError,
    RandomResizedCrop,
    Rotate,
    Solarize,
    TorchvisionLoader,
    augment_parameters,
    check_augment,
    create_augment,
    create_loader,
    open_shards,
    parse_labels,
    rank_share,
    register_op,
)

SIZE = 16


def id_shards(tmp_path, n, encoding="raw", name="ids", size=SIZE, channels=3, shard_size=20):
    """Shards whose label is the sample's id (n classes): lets a test see which samples came."""
    rng = np.random.default_rng(0)
    shape = (n, size, size, channels) if channels == 3 else (n, size, size)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    np.savez(
        tmp_path / f"{name}.npz",
        images=pixels,
        labels=np.arange(n),
        class_names=np.array([str(i) for i in range(n)]),
    )
    source = shards.open_source("npz", tmp_path / f"{name}.npz", "train")
    shards.convert(source, tmp_path / name, encoding=encoding, shard_size=shard_size, progress=False)
    return tmp_path / name, pixels


MULTI_CROP = dict(views=4, small_views=3, small_size=8, small_crop_scale=(0.05, 0.4))  # 4 + 3 small views
IDENTITY = dict(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_p=0.0,
    jitter_p=0.0,
    gray_p=0.0,
    blur_p=0.0,
    solarize_p=0.0,
)


def pixels_of(batch, folder):
    """Undo the normalisation: back to 0..255 pixel values, NHWC float."""
    source = open_shards(folder)
    mean = torch.tensor(source.mean) * 255
    std = torch.tensor(source.std) * 255
    return batch.float().permute(0, 2, 3, 1) * std + mean


def collect(loader):
    images, labels = [], []
    for *views, label in loader:
        images.append(views)
        labels.append(label)
    return images, torch.cat(labels)


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
@pytest.mark.parametrize(
    "dtype,channels_last", [(torch.float32, False), (torch.float16, False), (torch.bfloat16, True)]
)
def test_shapes_dtypes_and_layout(tmp_path, encoding, dtype, channels_last):
    folder, _ = id_shards(tmp_path, 24, encoding=encoding)
    for mode, count in [("pretrain", 3), ("train", 2), ("val", 2)]:
        loader = create_loader(mode, folder, batch_size=8, size=12, dtype=dtype, channels_last=channels_last)
        assert len(loader) == 3
        batch = next(iter(loader))
        assert len(batch) == count
        *images, label = batch
        assert label.dtype == torch.int64 and label.shape == (8,)
        for image in images:
            assert image.shape == (8, 3, 12, 12) and image.dtype == dtype
            assert image.is_contiguous(memory_format=torch.channels_last) == channels_last
            assert image.float().abs().mean() > 0.1  # normalised pixels, not zeros


def test_two_views_differ_and_share_the_label(tmp_path):
    folder, pixels = id_shards(tmp_path, 32)
    loader = create_loader("pretrain", folder, batch_size=16, size=SIZE)
    view1, view2, label = next(iter(loader))
    differ = (view1 - view2).abs().flatten(1).mean(1) > 0.05
    assert differ.float().mean() > 0.9
    assert len(set(label.tolist())) == 16


def test_n_views_and_small_views_each_independent(tmp_path):
    folder, _ = id_shards(tmp_path, 32, encoding="jpeg")
    loader = create_loader("pretrain", folder, batch_size=16, size=SIZE, **MULTI_CROP)
    *views, label = next(iter(loader))
    assert [v.shape for v in views] == [(16, 3, SIZE, SIZE)] * 4 + [(16, 3, 8, 8)] * 3
    assert len(set(label.tolist())) == 16
    for group in (views[:4], views[4:]):  # a separate op chain per view: no two views alike
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                assert ((a - b).abs().flatten(1).mean(1) > 0.05).float().mean() > 0.9


def test_every_view_is_of_its_own_image(tmp_path):
    """Identity ops: all N views are the labelled image, the small ones that image at the small side."""
    folder, pixels = id_shards(tmp_path, 16)
    loader = create_loader(
        "pretrain",
        folder,
        batch_size=16,
        size=SIZE,
        views=3,
        small_views=2,
        small_size=8,
        small_crop_scale=(1.0, 1.0),
        augment_overrides=IDENTITY,
    )
    *views, label = next(iter(loader))
    order = torch.argsort(label)
    for large in views[:3]:
        np.testing.assert_allclose(pixels_of(large, folder)[order].numpy(), pixels, atol=1.0)
    small = torch.nn.functional.interpolate(
        torch.tensor(pixels).permute(0, 3, 1, 2).float(), size=8, mode="area"
    )
    for view in views[3:]:
        got = pixels_of(view, folder)[order].permute(0, 3, 1, 2)
        distance = torch.cdist(got.flatten(1), small.flatten(1))  # each small view is nearest its own image
        assert torch.equal(distance.argmin(1), torch.arange(16))
    torch.testing.assert_close(views[3], views[4])  # full-image crops of one decode: nothing random left
    # The small views' own crop scale: quarter-area crops at random places, while the large stay whole.
    loader = create_loader(
        "pretrain",
        folder,
        batch_size=16,
        size=SIZE,
        small_views=2,
        small_size=8,
        small_crop_scale=(0.25, 0.25),
        augment_overrides=IDENTITY,
    )
    large, _, small_a, small_b, label = next(iter(loader))
    np.testing.assert_allclose(pixels_of(large, folder)[torch.argsort(label)].numpy(), pixels, atol=1.0)
    assert ((small_a - small_b).abs().flatten(1).mean(1) > 0.05).float().mean() > 0.8


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(views=1), "views=1: contrastive pretraining needs at least 2"),
        (dict(small_views=-1), "small_views=-1 must be 0"),
        (dict(small_views=2, small_size=SIZE), f"small_size={SIZE} must be between 0 and the views' size"),
        (dict(small_views=2), "small_size=None must be between"),
        (dict(small_views=2, small_size=8, small_crop_scale=(0.5, 0.2)), "small_crop_scale=.0.5, 0.2. must"),
    ],
)
def test_bad_view_counts_refused(tmp_path, kwargs, message):
    folder, _ = id_shards(tmp_path, 16)
    with pytest.raises(PipelineError, match=message):
        create_loader("pretrain", folder, batch_size=8, size=SIZE, **kwargs)


def test_same_seed_same_batches_other_seed_other_batches(tmp_path):
    folder, _ = id_shards(tmp_path, 40)

    def first_batch(seed):
        v1, v2, label = next(iter(create_loader("pretrain", folder, batch_size=10, size=SIZE, seed=seed)))
        return v1, label

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_every_epoch_is_reshuffled(tmp_path):
    folder, _ = id_shards(tmp_path, 40, shard_size=5)
    loader = create_loader("pretrain", folder, batch_size=10, size=SIZE)
    first = collect(loader)[1].tolist()
    second = collect(loader)[1].tolist()
    assert sorted(first) == sorted(second) == list(range(40))
    assert first != second


@pytest.mark.parametrize("n,world", [(40, 2), (53, 2), (61, 3)])
def test_ranks_see_disjoint_samples_covering_the_epoch(tmp_path, n, world):
    folder, _ = id_shards(tmp_path, n, shard_size=7)
    seen = []
    for rank in range(world):
        loader = create_loader("pretrain", folder, batch_size=4, size=SIZE, rank=rank, world_size=world)
        assert len(loader) == (n // world) // 4  # the same for every rank
        seen.append(set(collect(loader)[1].tolist()))
    union = set().union(*seen)
    assert sum(map(len, seen)) == len(union)  # disjoint
    assert len(union) == world * len(loader) * 4  # everything a rank could take in whole batches
    if n % (world * 4) == 0:
        assert union == set(range(n))


@pytest.mark.parametrize("n,world,batch", [(53, 2, 5), (61, 3, 8), (7, 1, 4), (10, 4, 3)])
def test_val_yields_every_sample_exactly_once(tmp_path, n, world, batch):
    folder, pixels = id_shards(tmp_path, n, encoding="png")
    labels = []
    for rank in range(world):
        loader = create_loader("val", folder, batch_size=batch, size=SIZE, rank=rank, world_size=world)
        images, got = collect(loader)
        assert len(got) == rank_share(n, rank, world)
        labels += got.tolist()
        for (image,), ids in zip(images, torch.split(got, batch), strict=True):  # pixels match the ids
            np.testing.assert_allclose(pixels_of(image, folder).numpy(), pixels[ids.numpy()], atol=1.0)
    assert sorted(labels) == list(range(n))
    # A second pass starts over: same samples, same order.
    again = collect(create_loader("val", folder, batch_size=batch, size=SIZE, rank=0, world_size=world))[1]
    first = collect(create_loader("val", folder, batch_size=batch, size=SIZE, rank=0, world_size=world))[1]
    assert torch.equal(again, first)


def pretrain_views(folder, n, **overrides):
    """All first views of one epoch, ordered by sample id, as 0..255 pixels (N, H, W, C)."""
    loader = create_loader("pretrain", folder, batch_size=n, size=SIZE, augment_overrides=overrides)
    view1, _, label = next(iter(loader))
    return pixels_of(view1, folder)[torch.argsort(label)].numpy()


def test_identity_settings_reproduce_the_image(tmp_path):
    folder, pixels = id_shards(tmp_path, 16)
    np.testing.assert_allclose(pretrain_views(folder, 16, **IDENTITY), pixels, atol=1.0)


def test_flip_probability_one_mirrors_and_zero_never_does(tmp_path):
    folder, pixels = id_shards(tmp_path, 16)
    np.testing.assert_allclose(
        pretrain_views(folder, 16, **{**IDENTITY, "flip_p": 1.0}), pixels[:, :, ::-1], atol=1.0
    )
    assert HorizontalFlip(0.0) in create_augment("digits", SIZE)


def test_grayscale_probability_one_gives_equal_channels(tmp_path):
    folder, _ = id_shards(tmp_path, 16)
    views = pretrain_views(folder, 16, **{**IDENTITY, "gray_p": 1.0})
    assert np.abs(views[..., 0] - views[..., 1]).max() <= 1.0
    assert np.abs(views[..., 1] - views[..., 2]).max() <= 1.0
    colour = pretrain_views(folder, 16, **IDENTITY)
    assert np.abs(colour[..., 0] - colour[..., 1]).mean() > 20


def test_jitter_changes_colours_and_crop_zooms(tmp_path):
    folder, pixels = id_shards(tmp_path, 16)
    jittered = pretrain_views(folder, 16, **{**IDENTITY, "jitter_p": 1.0, "brightness": 0.8})
    assert np.abs(jittered - pixels).mean() > 5
    cropped = pretrain_views(folder, 16, **{**IDENTITY, "crop_scale": (0.1, 0.2)})
    assert np.abs(cropped - pixels).mean() > 20


def test_blur_smooths_and_solarize_inverts_bright_pixels(tmp_path):
    folder, pixels = id_shards(tmp_path, 16)
    blurred = pretrain_views(
        folder, 16, **{**IDENTITY, "blur_p": 1.0, "blur_sigma": (1.5, 1.5), "blur_kernel": 0.4}
    )
    assert (
        np.abs(np.diff(blurred, axis=2)).mean() < 0.5 * np.abs(np.diff(pixels.astype(float), axis=2)).mean()
    )
    solarized = pretrain_views(folder, 16, **{**IDENTITY, "solarize_p": 1.0})
    np.testing.assert_allclose(solarized, np.where(pixels >= 128, 255 - pixels, pixels), atol=1.0)


def test_a_probability_applies_per_sample(tmp_path):
    folder, pixels = id_shards(tmp_path, 64)
    views = pretrain_views(folder, 64, **{**IDENTITY, "solarize_p": 0.5})
    solarized = (views.reshape(64, -1).max(1) < 128).mean()
    assert 0.25 < solarized < 0.75


def test_digits_preset_rotates_without_flipping_on_one_channel(tmp_path):
    folder, _ = id_shards(tmp_path, 16, channels=1, encoding="png")
    loader = create_loader("pretrain", folder, batch_size=8, size=SIZE, preset="digits")
    view1, view2, _ = next(iter(loader))
    assert view1.shape == (8, 1, SIZE, SIZE) and not torch.equal(view1, view2)
    with pytest.raises(PipelineError, match="one channel but the augmentation uses colour"):
        create_loader("pretrain", folder, batch_size=8, size=SIZE, preset="simclr")
    rgb = create_loader("pretrain", folder, batch_size=8, size=SIZE, preset="simclr", channels=3)
    assert next(iter(rgb))[0].shape == (8, 3, SIZE, SIZE)


@pytest.mark.parametrize("size,blur", [(32, False), (224, True)])
def test_simclr_preset_is_scaled_to_the_image_size(size, blur):
    crop, jitter, gray, *rest, flip = create_augment("simclr", size)
    assert jitter.jitter_p == 0.8 and gray.gray_p == 0.2 and flip.flip_p == 0.5
    assert jitter.brightness == pytest.approx(0.4 if size < 96 else 0.8)
    assert rest == ([GaussianBlur(0.5)] if blur else [])


def test_unknown_preset_or_parameter_lists_the_valid_ones():
    with pytest.raises(PipelineError, match="unknown augmentation preset 'simclr2'.*simclr, basic"):
        create_augment("simclr2", 32)
    with pytest.raises(PipelineError, match="unknown augmentation parameter 'jiter_p'.*jitter_p"):
        create_augment("simclr", 32, jiter_p=0.5)
    with pytest.raises(PipelineError, match="not a probability"):
        create_augment("simclr", 32, gray_p=2)


def test_labels_parse_from_padded_ascii():
    padded = torch.zeros(4, 12, dtype=torch.uint8)
    for row, text in enumerate([b"7", b"-1", b"123", b"0"]):
        padded[row, : len(text)] = torch.tensor(list(text))
    assert parse_labels(padded).tolist() == [7, -1, 123, 0]


def test_a_corrupt_sample_is_named_not_a_dali_trace(tmp_path):
    folder, _ = id_shards(tmp_path, 20, encoding="png")
    tar = folder / "train-000000.tar"
    key, parts = next(shards.read_samples(tar))
    data = bytearray(tar.read_bytes())
    start = data.find(parts["png"])
    data[start + 8 : start + len(parts["png"])] = b"\x00" * (len(parts["png"]) - 8)  # same length
    tar.write_bytes(bytes(data))
    with pytest.raises(PipelineError) as err:  # refused before DALI reads a byte
        list(create_loader("val", folder, batch_size=20, size=SIZE))
    assert f"train-000000.tar: sample {key} changed since conversion" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_truncated_shard_is_named(tmp_path):
    folder, _ = id_shards(tmp_path, 40, encoding="png")
    tar = folder / "train-000001.tar"
    tar.write_bytes(tar.read_bytes()[:3000])
    with pytest.raises(PipelineError, match="train-000001.tar: truncated"):
        list(create_loader("val", folder, batch_size=8, size=SIZE))


def test_a_missing_index_is_rebuilt(tmp_path):
    folder, _ = id_shards(tmp_path, 20)
    index = folder / "train-000000.idx"
    before = index.read_text()
    index.unlink()
    assert len(collect(create_loader("val", folder, batch_size=5, size=SIZE))[1]) == 20
    assert index.read_text() == before


def test_too_few_samples_for_the_batch_and_world(tmp_path):
    folder, _ = id_shards(tmp_path, 10)
    with pytest.raises(PipelineError, match="cannot fill one batch of 8 on each of 2 ranks"):
        create_loader("pretrain", folder, batch_size=8, size=SIZE, world_size=2)


def test_torchvision_baseline_val_matches_pixels_exactly_once(tmp_path):
    folder, pixels = id_shards(tmp_path, 45, encoding="png", shard_size=5)
    labels = []
    for rank in range(2):
        loader = TorchvisionLoader("val", folder, batch_size=4, size=SIZE, rank=rank, world_size=2)
        count = 0
        for image, ids in loader:
            np.testing.assert_allclose(pixels_of(image, folder).numpy(), pixels[ids.numpy()], atol=1.0)
            labels += ids.tolist()
            count += 1
        assert count == len(loader)
    assert sorted(labels) == list(range(45))


def test_torchvision_baseline_applies_the_same_augment(tmp_path):
    folder, pixels = id_shards(tmp_path, 16, shard_size=4)
    augment = create_augment("simclr", SIZE, **{**IDENTITY, "flip_p": 1.0, "gray_p": 1.0})
    loader = TorchvisionLoader("pretrain", folder, batch_size=4, size=SIZE, augment=augment)
    view1, view2, ids = next(iter(loader))
    got = pixels_of(view1, folder).numpy()
    gray = pixels[ids.numpy()][:, :, ::-1] @ np.array([0.2989, 0.587, 0.114])
    np.testing.assert_allclose(got[..., 0], gray, atol=1.5)
    assert np.abs(got[..., 0] - got[..., 2]).max() <= 1.0
    with pytest.raises(PipelineError, match="4 tars cannot feed 2 ranks x 4 workers"):
        TorchvisionLoader("pretrain", folder, batch_size=4, size=SIZE, world_size=2, num_workers=4)


def test_crop_area_statistics_match_torchvision_random_resized_crop(tmp_path):
    """Pixels encode their own coordinates, so each output view tells which area it was cropped from."""
    side, n = 64, 128
    ramp = np.arange(side, dtype=np.uint8) * 4
    coords = np.stack(
        [np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side)), np.zeros((side, side), np.uint8)],
        axis=-1,
    )
    np.savez(tmp_path / "c.npz", images=np.repeat(coords[None], n, 0), labels=np.zeros(n, np.int64))
    shards.convert(
        shards.open_source("npz", tmp_path / "c.npz", "train"),
        tmp_path / "c",
        encoding="raw",
        shard_size=16,
        progress=False,
    )
    overrides = {**IDENTITY, "crop_scale": (0.08, 1.0), "crop_ratio": (3 / 4, 4 / 3)}

    def areas(loader):
        view1, view2, _ = next(iter(loader))
        out = []
        for view in (view1, view2):
            pixels = pixels_of(view, tmp_path / "c").numpy()
            width = (pixels[..., 0].max((1, 2)) - pixels[..., 0].min((1, 2))) / 4 + 1
            height = (pixels[..., 1].max((1, 2)) - pixels[..., 1].min((1, 2))) / 4 + 1
            out.append(width * height / side**2)
        return np.concatenate(out)

    dali_loader = create_loader(
        "pretrain", tmp_path / "c", batch_size=n, size=32, augment_overrides=overrides
    )
    dali = areas(dali_loader)
    augment = create_augment("basic", 32, **overrides)
    torchvision = areas(
        TorchvisionLoader(
            "pretrain", tmp_path / "c", batch_size=n // 2, size=32, augment=augment, num_workers=0
        )
    )
    assert abs(dali.mean() - torchvision.mean()) < 0.07, (dali.mean(), torchvision.mean())
    assert abs(np.median(dali) - np.median(torchvision)) < 0.1
    assert dali.min() < 0.2 and dali.max() > 0.8  # the whole range is drawn


def forever(loader, start=0):
    """Batches across epochs, starting `start` batches into the first."""
    yield from loader.batches(start)
    while True:
        yield from loader.batches()


def test_a_loader_restored_from_its_state_continues_the_same_stream(tmp_path):
    folder, _ = id_shards(tmp_path, 40, shard_size=10)
    loader = create_loader("pretrain", folder, batch_size=8, size=SIZE, seed=3)
    assert len(loader) == 5
    stream = forever(loader)
    for _ in range(7):  # into the second epoch
        next(stream)
    state = loader.state()
    expected = [next(stream) for _ in range(4)]
    restored = create_loader("pretrain", folder, batch_size=8, size=SIZE, seed=3, checkpoint=state)
    stream = forever(restored, start=7 % 5)
    for want in expected:
        got = next(stream)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@dataclass(frozen=True)
class Invert(Op):
    """An op defined here alone: both loaders must run it through its two forms."""

    probability: ClassVar[str] = "invert_p"
    invert_p: float = 0.5

    def dali(self, image, size):
        return fn.cast(255 - fn.cast(image, dtype=types.INT16), dtype=types.UINT8)

    def torchvision(self, size):
        return v2.RandomInvert(1.0)


@pytest.fixture
def invert_registered():
    register_op(Invert)
    yield
    del OPS["Invert"]


def test_a_new_op_runs_in_both_loaders_and_by_its_override_name(tmp_path, invert_registered):
    folder, pixels = id_shards(tmp_path, 16, shard_size=4)
    opened = open_shards(folder)
    assert augment_parameters()["invert_p"] is float
    augment = create_augment("basic", SIZE, **{**IDENTITY, "invert_p": 1.0})
    assert [type(op) for op in augment] == [RandomResizedCrop, Invert, HorizontalFlip]  # before the flip
    np.testing.assert_allclose(
        pretrain_views(opened, 16, **{**IDENTITY, "invert_p": 1.0}), 255 - pixels, atol=1
    )
    view, _, ids = next(iter(TorchvisionLoader("pretrain", opened, batch_size=4, size=SIZE, augment=augment)))
    np.testing.assert_allclose(pixels_of(view, folder).numpy(), 255 - pixels[ids.numpy()], atol=1)
    # After a flip, which then is not fused into the last DALI op: both loaders mirror, then invert.
    flip_then_invert = (augment[0], HorizontalFlip(1.0), Invert(1.0))
    for loader in (
        create_loader("pretrain", opened, batch_size=16, size=SIZE, augment=flip_then_invert),
        TorchvisionLoader("pretrain", opened, batch_size=4, size=SIZE, augment=flip_then_invert),
    ):
        view, _, ids = next(iter(loader))
        np.testing.assert_allclose(
            pixels_of(view, folder).numpy(), 255 - pixels[ids.numpy(), :, ::-1], atol=1
        )
    half = create_augment("basic", SIZE, **{**IDENTITY, "invert_p": 0.5})  # a chance per sample
    view, _, ids = next(iter(create_loader("pretrain", opened, batch_size=16, size=SIZE, augment=half)))
    views = pixels_of(view, folder).numpy()
    inverted = [np.allclose(v, 255 - pixels[i], atol=1) for v, i in zip(views, ids.numpy(), strict=True)]
    assert 0 < sum(inverted) < 16


def test_an_override_changes_its_op_or_adds_it_in_the_standard_order():
    augment = create_augment("basic", 32, solarize_p=0.3, rotate_deg=5.0, crop_scale=[0.2, 1.0])
    assert [type(op) for op in augment] == [RandomResizedCrop, Rotate, Solarize, HorizontalFlip]
    assert augment[0].crop_scale == (0.2, 1.0) and augment[2] == Solarize(0.3)
    # a parameter of an op the preset lacks, its probability unset: the op stays out, as before
    assert create_augment("basic", 32, brightness=0.9, blur_p=0.0) == create_augment("basic", 32)
    assert create_augment("digits", 28, flip_p=0.5)[-1] == HorizontalFlip(0.5)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: ColorJitter(hue=0.7), "augmentation hue=0.7 must be a number in \\[0, 0.5\\]"),
        (lambda: ColorJitter(jitter_p="high"), "augmentation jitter_p='high' is not a probability"),
        (
            lambda: GaussianBlur(blur_sigma=(2.0, 1.0)),
            "blur_sigma=\\(2.0, 1.0\\) must satisfy 0 < min <= max",
        ),
        (lambda: RandomResizedCrop(crop_scale=(0.0, 1.0)), "crop_scale=\\(0.0, 1.0\\) must satisfy 0 < min"),
        (lambda: Rotate(-5.0), "rotate_deg=-5.0 must be a number in \\[0, 180\\]"),
        (lambda: Solarize(solarize_threshold=300), "solarize_threshold=300 must be an integer in 0..255"),
        (lambda: check_augment([HorizontalFlip()]), "starts with RandomResizedCrop .* got HorizontalFlip"),
        (lambda: check_augment([RandomResizedCrop(), Grayscale(), Grayscale()]), "Grayscale twice"),
    ],
)
def test_an_op_checks_its_parameters_in_one_line(make, message):
    with pytest.raises(PipelineError, match=message) as err:
        make()
    assert "\n" not in str(err.value)


def test_a_shard_set_is_checked_once_however_many_loaders_read_it(tmp_path, monkeypatch):
    folder, _ = id_shards(tmp_path, 24, shard_size=6)
    checks = []
    check = shards.check
    monkeypatch.setattr(shards, "check", lambda *args: checks.append(args) or check(*args))
    opened = open_shards(folder)
    assert (opened.num_samples, opened.num_classes, opened.channels, opened.folder) == (24, 24, 3, folder)
    for mode in ("pretrain", "train", "val", "val"):
        next(iter(create_loader(mode, opened, batch_size=8, size=SIZE)))
    TorchvisionLoader("val", opened, batch_size=8, size=SIZE)
    assert len(checks) == 1 and open_shards(opened) is opened
    create_loader("val", folder, batch_size=8, size=SIZE)  # a folder is opened, so checked, again
    assert len(checks) == 2
    with pytest.raises(PipelineError, match=f"{folder}: 24 samples cannot fill one batch of 32"):
        create_loader("pretrain", opened, batch_size=32, size=SIZE)


def test_a_fault_met_while_reading_names_the_shard_and_sample(tmp_path):
    folder, _ = id_shards(tmp_path, 20, encoding="png")
    opened = open_shards(folder)  # checked clean; the tar changes after
    tar = folder / "train-000000.tar"
    key, parts = next(shards.read_samples(tar))
    data = bytearray(tar.read_bytes())
    start = data.find(parts["png"])
    data[start : start + len(parts["png"])] = b"\x00" * len(parts["png"])
    tar.write_bytes(bytes(data))
    with pytest.raises(PipelineError) as err:
        list(create_loader("val", opened, batch_size=20, size=SIZE))
    assert f"train-000000.tar: sample {key} changed since conversion" in str(err.value)
    assert "\n" not in str(err.value)
