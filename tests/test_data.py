"""The training stream: coverage, shuffling, determinism, worker/rank splits, seeking, checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader

from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import CMU_SKELETON
from lcdata.labels.warp import JitterConfig
from lcdata.store.layout import ATTR_KEY, create_maps, read_attrs, update_attrs
from lcdata.store.training import open_training_store
from trainer import data as data_mod
from trainer.data import (
    StoreStream,
    StreamLayout,
    effective_lanes,
    flip_arrays,
    make_loader,
    step_lane,
    to_device,
)
from trainer.losses import stage_losses

RENDER = RenderConfig(input_size=64, stride=4, sigma=3.0)
PER_SHARD = 6  # 32 samples -> blocks of 6, 6, 6, 6, 6, 2: the short last block is exercised


def coco_mini_root() -> Path:
    """COCO-MINI, as the `coco_mini` fixture finds it (which is function-scoped)."""
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"
    if not (root / "annotations").is_dir():
        if os.environ.get("LC_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"COCO-MINI not found at {root} and LC_REQUIRE_SHARED_DATA=1")
        pytest.skip(f"COCO-MINI not found at {root}")
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-sample GT store, 64 px crops, stride 4, 6 samples per shard."""
    coco_mini = coco_mini_root()
    out = tmp_path_factory.mktemp("data") / "gt.zarr"
    build_gt_store(
        coco_mini / "annotations" / "person_keypoints_val2017.json",
        coco_mini / "val2017",
        out,
        render=RENDER,
        build=BuildConfig(views_per_image=1, seed=3, samples_per_shard=PER_SHARD),
        progress=False,
    )
    return out


def _take(it, n: int) -> list[dict[str, torch.Tensor]]:
    return [next(it) for _ in range(n)]


def _lane_epoch_length(layout: StreamLayout, lane: int, epoch: int = 0) -> int:
    return int(layout.block_sizes(layout.epoch_blocks(epoch, lane)).sum())


# --------------------------------------------------------------------------------------------
# the order (no I/O)


def test_epoch_covers_every_sample_once_and_is_shuffled() -> None:
    layout = StreamLayout(num_samples=32, samples_per_block=PER_SHARD, seed=0, shuffle_blocks=2)
    epoch0 = layout.lane_samples(0, start=0, count=32)
    epoch1 = layout.lane_samples(0, start=32, count=32)
    for order in (epoch0, epoch1):
        assert sorted(order.tolist()) == list(range(32))
    assert not np.array_equal(epoch0, np.arange(32))
    assert not np.array_equal(epoch0, epoch1)  # each epoch reshuffles
    # deterministic in the seed, different across seeds
    again = StreamLayout(num_samples=32, samples_per_block=PER_SHARD, seed=0, shuffle_blocks=2)
    other = StreamLayout(num_samples=32, samples_per_block=PER_SHARD, seed=1, shuffle_blocks=2)
    np.testing.assert_array_equal(again.lane_samples(0, start=0, count=64), np.r_[epoch0, epoch1])
    assert not np.array_equal(other.lane_samples(0, start=0, count=32), epoch0)


def test_shuffle_window_mixes_only_its_blocks() -> None:
    layout = StreamLayout(num_samples=32, samples_per_block=PER_SHARD, seed=0, shuffle_blocks=2)
    first, skip = next(layout.windows(0))
    assert skip == 0 and len(first.blocks) == 2
    blocks_of_samples = set((first.samples // PER_SHARD).tolist())
    assert blocks_of_samples == set(first.blocks)


@pytest.mark.parametrize("lanes", [2, 4])
def test_lanes_are_disjoint_and_cover_each_epoch(lanes: int) -> None:
    layout = StreamLayout(num_samples=32, samples_per_block=PER_SHARD, seed=5, num_lanes=lanes)
    for epoch in (0, 1):
        seen: list[int] = []
        for lane in range(lanes):
            before = sum(_lane_epoch_length(layout, lane, e) for e in range(epoch))
            count = _lane_epoch_length(layout, lane, epoch)
            seen += layout.lane_samples(lane, start=before, count=count).tolist()
        assert sorted(seen) == list(range(32))  # disjoint (no repeats) and complete


def test_more_lanes_than_blocks_is_refused_by_the_layout() -> None:
    with pytest.raises(LcposeError, match=r"6 block\(s\) of 6 samples but 8 lanes"):
        StreamLayout(num_samples=32, samples_per_block=PER_SHARD, seed=0, num_lanes=8)


def test_effective_lanes_shrink_to_the_store() -> None:
    assert effective_lanes(2, num_blocks=6) == 2
    assert effective_lanes(2, num_blocks=1) == 1  # a one-block store trains at the defaults
    assert effective_lanes(4, num_blocks=6, world_size=2) == 3
    with pytest.raises(LcposeError, match=r"1 block\(s\) but 2 ranks"):
        effective_lanes(2, num_blocks=1, world_size=2)


def test_step_lane_takes_the_lanes_in_turn() -> None:
    assert [step_lane(s, rank=0, lanes=2) for s in range(4)] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert step_lane(5, rank=1, lanes=2) == (3, 2)
    assert step_lane(7, rank=1, lanes=1) == (1, 7)


# --------------------------------------------------------------------------------------------
# batches from a real store


def test_batches_hold_the_store_samples(store: Path) -> None:
    spec = open_training_store(store)
    assert spec.target == "gt" and spec.num_samples == 32
    stream = StoreStream(spec, batch_size=5, seed=0, lanes=1)
    batches = _take(iter(stream), 7)  # 35 samples: 2 epochs
    g = zarr.open_group(str(store), mode="r")
    h = RENDER.grid_size
    for batch in batches:
        assert batch["images"].shape == (5, 64, 64, 3) and batch["images"].dtype == torch.uint8
        assert batch["masks"].shape == (5, 1, h, h) and batch["masks"].dtype == torch.uint8
        assert batch["heatmaps"].shape == (5, 19, h, h) and batch["heatmaps"].dtype == torch.float16
        assert batch["pafs"].shape == (5, 38, h, h) and batch["pafs"].dtype == torch.float16
        idx = batch["index"].numpy()
        np.testing.assert_array_equal(
            batch["images"].numpy(), g["images"].get_orthogonal_selection(idx)
        )
        np.testing.assert_array_equal(
            batch["masks"][:, 0].numpy(), g["masks"].get_orthogonal_selection(idx)
        )
        np.testing.assert_array_equal(
            batch["heatmaps"].numpy(), g["gt/heatmaps"].get_orthogonal_selection(idx)
        )
        np.testing.assert_array_equal(
            batch["pafs"].numpy(), g["gt/pafs"].get_orthogonal_selection(idx)
        )
        images, masks, heatmaps, pafs = to_device(batch)
        assert images.dtype == torch.uint8 and torch.equal(images, batch["images"])
        for x, y in ((masks, "masks"), (heatmaps, "heatmaps"), (pafs, "pafs")):
            assert x.dtype == torch.float32 and torch.equal(x, batch[y].float())
    first_epoch = torch.cat([b["index"] for b in batches])[:32]
    assert sorted(first_epoch.tolist()) == list(range(32))


def test_two_lanes_follow_the_plan_and_split_blocks(store: Path) -> None:
    spec = open_training_store(store)
    stream = StoreStream(spec, batch_size=4, seed=2, lanes=2)
    got = [b["index"].numpy() for b in _take(make_loader(stream, workers=2), 8)]
    layout = stream.layout()
    for step, idx in enumerate(got):
        lane, m = step_lane(step, rank=0, lanes=2)
        np.testing.assert_array_equal(idx, layout.lane_samples(lane, start=4 * m, count=4))
    # within an epoch (a lane's first 8 samples are: it has >= 2 blocks) the two lanes read
    # different blocks
    even = {int(i) // PER_SHARD for idx in got[0:4:2] for i in idx}
    odd = {int(i) // PER_SHARD for idx in got[1:4:2] for i in idx}
    assert even and odd and not even & odd


@pytest.mark.parametrize("start_step", [0, 5])
def test_thread_and_process_readers_give_the_same_batches(store: Path, start_step: int) -> None:
    spec = open_training_store(store)

    def batches(reader: str, workers: int, lanes: int = 2) -> list[dict[str, torch.Tensor]]:
        stream = StoreStream(
            spec, batch_size=4, seed=3, flip=True, start_step=start_step, lanes=lanes
        )
        return _take(make_loader(stream, workers=workers, reader=reader), 9)

    reference = batches("threads", 0)  # made in this thread, between steps
    others = [batches("threads", w) for w in (1, 2, 3)] + [
        batches("processes", w) for w in (1, 2, 3)
    ]
    one_lane = batches("threads", 2, lanes=1)  # the lanes decide the order
    assert any(
        b["index"].tolist() != i["index"].tolist() for b, i in zip(reference, one_lane, strict=True)
    )
    for other in others:
        for x, y in zip(reference, other, strict=True):
            assert x.keys() == y.keys()
            for key in x:
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key


def test_default_options_train_on_a_one_block_store(store: Path, tmp_path: Path) -> None:
    one = tmp_path / "one.zarr"
    build_gt_store(
        coco_mini_root() / "annotations" / "person_keypoints_val2017.json",
        coco_mini_root() / "val2017",
        one,
        render=RENDER,
        build=BuildConfig(views_per_image=1, seed=3, samples_per_shard=64),
        progress=False,
    )
    spec = open_training_store(one)
    stream = StoreStream(spec, batch_size=4, seed=0)  # default lanes (2), one block
    assert stream.lanes == 1
    batches = _take(make_loader(stream, workers=2), 10)
    assert sorted(torch.cat([b["index"] for b in batches[:8]]).tolist()) == list(range(32))


def test_reader_thread_errors_reach_the_consumer(store: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken.zarr"
    shutil.copytree(store, broken)
    spec = open_training_store(broken)
    chunks = sorted((broken / "gt" / "pafs" / "c").rglob("*"))
    for chunk in chunks:
        if chunk.is_file():
            chunk.write_bytes(b"not zstd")
    loader = make_loader(StoreStream(spec, batch_size=4, seed=0), workers=2, reader="threads")
    with pytest.raises(LcposeError, match=r"broken.zarr/gt/pafs: cannot read block \d+ \("):
        next(loader)


def test_unknown_reader_is_refused(store: Path) -> None:
    spec = open_training_store(store)
    with pytest.raises(LcposeError, match="make_loader.reader: must be one of threads, processes"):
        make_loader(StoreStream(spec, batch_size=4, seed=0), workers=1, reader="fibres")


def test_ranks_read_disjoint_samples(store: Path) -> None:
    spec = open_training_store(store)
    per_rank = []
    for rank in (0, 1):
        stream = StoreStream(spec, batch_size=2, seed=4, rank=rank, world_size=2, lanes=1)
        n = _lane_epoch_length(stream.layout(), rank) // 2  # one epoch of this rank's blocks
        per_rank.append(torch.cat([b["index"] for b in _take(iter(stream), n)]).tolist())
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(32))


def test_stream_is_deterministic(store: Path) -> None:
    spec = open_training_store(store)
    a = _take(iter(StoreStream(spec, batch_size=3, seed=7)), 4)
    b = _take(iter(StoreStream(spec, batch_size=3, seed=7)), 4)
    c = _take(iter(StoreStream(spec, batch_size=3, seed=8)), 4)
    for x, y in zip(a, b, strict=True):
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert not all(torch.equal(x["index"], z["index"]) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize(
    ("workers", "reader", "resumed_workers"),
    [(0, "threads", 0), (2, "threads", 3), (2, "processes", 1), (1, "threads", 0)],
)
def test_resume_at_step_k_gives_the_same_batches(
    store: Path, workers: int, reader: str, resumed_workers: int
) -> None:
    # resumed with another number of readers, as on a machine with other cores
    spec = open_training_store(store)
    stream = StoreStream(spec, batch_size=5, seed=1)
    full = _take(make_loader(stream, workers=workers, reader=reader), 12)
    stream = StoreStream(spec, batch_size=5, seed=1, start_step=7)
    resumed = make_loader(stream, workers=resumed_workers, reader=reader)
    for x, y in zip(full[7:], _take(resumed, 5), strict=True):
        for key in x:
            assert torch.equal(x[key], y[key]), key


def test_seeking_far_reads_only_one_window(store: Path, monkeypatch) -> None:
    spec = open_training_store(store)
    reads: list[tuple[int, ...]] = []
    original = data_mod._Reader.read_block

    def counting(self, block):
        reads.append(block)
        return original(self, block)

    monkeypatch.setattr(data_mod._Reader, "read_block", counting)
    stream = StoreStream(spec, batch_size=4, seed=0, start_step=100_000, shuffle_blocks=2, lanes=1)
    batch = next(iter(stream))
    assert len(reads) <= 4  # the window(s) holding the batch: 2 blocks each, no more
    layout = stream.layout()
    np.testing.assert_array_equal(
        batch["index"].numpy(), layout.lane_samples(0, start=400_000, count=4)
    )


# --------------------------------------------------------------------------------------------
# flip augmentation


def test_flip_arrays_equals_rendering_the_mirrored_keypoints() -> None:
    rng = np.random.default_rng(0)
    s = RENDER.input_size
    parts = np.concatenate(
        [rng.uniform(4, s - 4, (2, 18, 2)), rng.integers(0, 3, (2, 18, 1))], axis=-1
    ).astype(np.float32)
    mirrored = parts.copy()
    mirrored[..., 0] = s - 1 - parts[..., 0]
    mirrored = mirrored[:, CMU_SKELETON.flip_permutation()]
    heat, pafs = render_targets(parts, cfg=RENDER, skeleton=CMU_SKELETON)
    heat_m, pafs_m = render_targets(mirrored, cfg=RENDER, skeleton=CMU_SKELETON)
    image = rng.integers(0, 256, (1, s, s, 3), dtype=np.uint8)
    mask = rng.integers(0, 2, (1, 16, 16)).astype(np.float32)
    fi, fm, fh, fp = flip_arrays(image, mask, heat[None], pafs[None], skeleton=CMU_SKELETON)
    np.testing.assert_allclose(fh[0], heat_m, atol=1e-5)
    np.testing.assert_allclose(fp[0], pafs_m, atol=1e-5)
    np.testing.assert_array_equal(fi[0], image[0, :, ::-1])
    again = flip_arrays(fi, fm, fh, fp, skeleton=CMU_SKELETON)
    for back, orig in zip(again, (image, mask, heat[None], pafs[None]), strict=True):
        np.testing.assert_allclose(back, orig, atol=1e-6)


def test_stream_flips_about_half_of_the_samples(store: Path) -> None:
    spec = open_training_store(store)
    plain = _take(iter(StoreStream(spec, batch_size=8, seed=0)), 4)
    flipped = _take(iter(StoreStream(spec, batch_size=8, seed=0, flip=True)), 4)
    num_flipped = 0
    for x, y in zip(plain, flipped, strict=True):
        assert torch.equal(x["index"], y["index"])  # flipping does not change the order
        for i in range(8):
            if torch.equal(x["images"][i], y["images"][i]):
                continue
            num_flipped += 1
            assert torch.equal(y["images"][i], x["images"][i].flip(1))
            assert torch.equal(y["masks"][i], x["masks"][i].flip(-1))
    assert 8 <= num_flipped <= 24


# --------------------------------------------------------------------------------------------
# checks on the store


def test_refuses_incomplete_store(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    update_attrs(zarr.open_group(str(copy), mode="r+"), complete=False)
    with pytest.raises(LcposeError, match="copy.zarr: store is marked incomplete"):
        open_training_store(copy)


def test_refuses_foreign_store(tmp_path: Path) -> None:
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["x"] = 1
    with pytest.raises(LcposeError, match="not an lcpose store"):
        open_training_store(tmp_path / "other.zarr")
    with pytest.raises(LcposeError, match="not a zarr v3 store"):
        open_training_store(tmp_path)


def test_refuses_missing_targets(store: Path, tmp_path: Path) -> None:
    with pytest.raises(LcposeError, match=r"no 'teacher' targets \(teacher/heatmaps missing\)"):
        open_training_store(store, target="teacher")
    with pytest.raises(LcposeError, match="open_training_store.target: must be one of"):
        open_training_store(store, target="labels")
    copy = tmp_path / "nogt.zarr"
    shutil.copytree(store, copy)
    shutil.rmtree(copy / "gt")
    with pytest.raises(LcposeError, match=r"no training targets \(neither target/\* nor gt/\*\)"):
        open_training_store(copy)


def test_corrected_store_reads_images_from_its_source(store: Path, tmp_path: Path) -> None:
    source = tmp_path / "gt.zarr"
    shutil.copytree(store, source)
    attrs = read_attrs(source)
    corrected = tmp_path / "runs" / "lc.zarr"
    group = zarr.open_group(str(corrected), mode="w")
    group.attrs[ATTR_KEY] = {**attrs, "kind": "corrected", "source_store": "../../gt.zarr"}
    create_maps(group, "target", attrs)
    src = zarr.open_group(str(source), mode="r")
    group["target/heatmaps"][:] = src["gt/heatmaps"][:] * 0.5
    group["target/pafs"][:] = src["gt/pafs"][:]

    spec = open_training_store(corrected)
    assert spec.target == "target"
    assert spec.arrays["images"] == (source.resolve(), "images")
    batch = next(iter(StoreStream(spec, batch_size=4, seed=0)))
    idx = batch["index"].numpy()
    np.testing.assert_array_equal(
        batch["heatmaps"].numpy(),
        (src["gt/heatmaps"].get_orthogonal_selection(idx) * 0.5).astype(np.float32),
    )
    np.testing.assert_array_equal(
        batch["images"].numpy(), src["images"].get_orthogonal_selection(idx)
    )
    # --target gt on a store that holds only corrected maps
    with pytest.raises(LcposeError, match="no 'gt' targets"):
        open_training_store(corrected, target="gt")
    shutil.rmtree(source)
    with pytest.raises(LcposeError, match=r"source store .*gt.zarr not found"):
        open_training_store(corrected)


def test_dataloader_batches_do_not_copy_the_store(store: Path) -> None:
    # the dataset pickles to a few hundred bytes: paths and numbers, never arrays
    import pickle

    spec = open_training_store(store)
    assert len(pickle.dumps(StoreStream(spec, batch_size=4, seed=0))) < 10_000
    loader = DataLoader(StoreStream(spec, batch_size=4, seed=0), batch_size=None, num_workers=0)
    assert next(iter(loader))["images"].shape[0] == 4


JITTER = JitterConfig(flip=True, max_rotate_deg=30, min_scale=0.8, max_scale=1.25, max_shift=0.1)


def _jittered(store: Path, *, workers: int, reader: str = "threads", start_step: int = 0):
    spec = open_training_store(store)
    stream = StoreStream(spec, batch_size=4, seed=5, jitter=JITTER, start_step=start_step)
    return _take(make_loader(stream, workers=workers, reader=reader), 10 - start_step)


def test_jittered_batches_depend_on_the_seed_only(store: Path) -> None:
    reference = _jittered(store, workers=0)
    for other in (
        _jittered(store, workers=2),
        _jittered(store, workers=2, reader="processes"),
        [None] * 4 + _jittered(store, workers=1, start_step=4),  # resumed mid-run
    ):
        for x, y in zip(reference, other, strict=True):
            if y is None:
                continue
            for key in x:
                assert torch.equal(x[key], y[key]), key
    # the jitter really moves the samples, and differently from epoch to epoch
    spec = open_training_store(store)
    plain = _take(make_loader(StoreStream(spec, batch_size=4, seed=5), workers=0), 10)
    assert [b["index"].tolist() for b in plain] == [b["index"].tolist() for b in reference]
    assert not torch.equal(plain[0]["images"], reference[0]["images"])
    first = {}
    for b in reference:  # 40 draws over a 32-sample store: some samples come twice
        for i, n in enumerate(b["index"].tolist()):
            if n in first:
                assert not torch.equal(first[n], b["heatmaps"][i])
            first[n] = b["heatmaps"][i]


def test_jittered_borders_get_no_gradient(store: Path) -> None:
    spec = open_training_store(store)
    shift_only = JitterConfig(flip=False, max_shift=0.2)
    stream = StoreStream(spec, batch_size=4, seed=1, jitter=shift_only)
    batch = next(iter(make_loader(stream, workers=0)))
    _, masks, heat, pafs = to_device(batch)
    assert 0 < masks.mean() < 1  # the shifted-in border is ignored
    pred_h = torch.zeros_like(heat, requires_grad=True)
    pred_p = torch.zeros_like(pafs, requires_grad=True)
    total, _ = stage_losses([(pred_h, pred_p)], heat, pafs, masks)
    total.backward()
    ignored = masks.expand_as(pred_h) == 0
    assert (pred_h.grad[ignored] == 0).all()
    assert (pred_p.grad[masks.expand_as(pred_p) == 0] == 0).all()
    assert pred_h.grad[~ignored].abs().sum() > 0
