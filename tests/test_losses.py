"""The masked L2 loss: value against numpy, zero gradient under the mask, stage sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.losses import masked_l2, stage_losses


def _tensors(seed: int, shape=(3, 5, 6, 7)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    b, _, h, w = shape
    pred = torch.from_numpy(rng.normal(size=shape).astype(np.float32)).requires_grad_()
    target = torch.from_numpy(rng.uniform(size=shape).astype(np.float32))
    mask = torch.from_numpy((rng.uniform(size=(b, 1, h, w)) < 0.6).astype(np.float32))
    return pred, target, mask


def test_masked_l2_matches_numpy_reference() -> None:
    pred, target, mask = _tensors(0)
    p, t, m = pred.detach().numpy(), target.numpy(), mask.numpy()
    expect = (
        sum(
            0.5 * float(((p[i, c] - t[i, c]) ** 2 * m[i, 0]).sum())
            for i in range(p.shape[0])
            for c in range(p.shape[1])
        )
        / p.shape[0]
    )
    assert masked_l2(pred, target, mask).item() == pytest.approx(expect, rel=1e-5)


def test_masked_pixels_get_exactly_zero_gradient() -> None:
    pred, target, mask = _tensors(1)
    masked_l2(pred, target, mask).backward()
    grad = pred.grad.numpy()
    off = np.broadcast_to(mask.numpy() == 0, grad.shape)
    assert off.any() and (~off).any()
    assert (grad[off] == 0).all()
    # where supervised, d/dpred of 0.5 (pred - target)^2 / B is (pred - target) / B
    expect = (pred.detach() - target).numpy() / pred.shape[0]
    np.testing.assert_allclose(grad[~off], expect[~off], rtol=1e-6)


def test_loss_is_a_per_sample_sum_not_a_pixel_mean() -> None:
    pred = torch.ones(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    mask = torch.ones(2, 1, 4, 4)
    # 0.5 * (2 samples * 3 channels * 16 pixels * 1^2) / 2 samples
    assert masked_l2(pred, target, mask).item() == 24.0
    mask[:, :, :2] = 0  # half of every map ignored
    assert masked_l2(pred, target, mask).item() == 12.0


def test_stage_losses_sum_heatmap_and_paf_terms_over_stages() -> None:
    heat, heat_t, mask = _tensors(2, (2, 4, 5, 5))
    pafs, pafs_t, _ = _tensors(3, (2, 6, 5, 5))
    stages = [(heat, pafs), (heat * 2, pafs * 0.5)]
    total, per_stage = stage_losses(stages, heat_t, pafs_t, mask)
    assert len(per_stage) == 2
    expect = sum(masked_l2(h, heat_t, mask) + masked_l2(p, pafs_t, mask) for h, p in stages)
    assert total.item() == pytest.approx(expect.item(), rel=1e-6)
    assert per_stage[1][0].item() == pytest.approx(masked_l2(heat * 2, heat_t, mask).item())
    total.backward()
    assert heat.grad is not None and pafs.grad is not None
