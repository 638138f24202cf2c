"""The training loss: masked L2 (paper eq. 1) summed over every stage (eq. 4 with y = targets).

Letters used in shapes below:
    B     samples in the (per-process) batch
    K+1   heatmap channels (parts + background), 2L PAF channels
    h, w  output grid in cells

Normalisation: each term is half the squared error summed over channels and pixels, divided by
the batch size B, i.e. a per-sample sum, not a per-pixel mean. The factor 1/2 and the division
by B follow Caffe's EuclideanLoss, which CMU-Pose was trained with; eq. 1 of the paper writes
the plain sum over one sample. So the loss grows with C * h * w: for the same per-pixel error
a 46x46 CMU grid gives about 46^2 / 32^2 = 2.1 times the value of the 32x32 synthetic grid.
"""

from __future__ import annotations

from torch import Tensor


def masked_l2(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Half squared error over channels and pixels where mask = 1, divided by batch size.

    Args:
        pred: (B, C, h, w) float, model output.
        target: (B, C, h, w) float, training target (GT or corrected maps).
        mask: (B, 1, h, w) float, 1 = supervise, 0 = ignore (W of eq. 1); broadcast over C.

    Returns:
        Scalar tensor 0.5 * sum(mask * (pred - target)^2) / B. Masked pixels contribute
        nothing and get an exactly zero gradient (the mask multiplies the difference).
    """
    diff = (pred - target) * mask
    return 0.5 * diff.square().sum() / pred.shape[0]


def stage_losses(
    stages: list[tuple[Tensor, Tensor]],
    heat_target: Tensor,
    paf_target: Tensor,
    mask: Tensor,
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """Eq. 1 for heatmaps and PAFs at every stage (intermediate supervision), summed.

    Args:
        stages: per stage (heatmaps (B, K+1, h, w), pafs (B, 2L, h, w)), as models return.
        heat_target: (B, K+1, h, w) float32 heatmap targets, the same for every stage.
        paf_target: (B, 2L, h, w) float32 PAF targets.
        mask: (B, 1, h, w) float32, 1 = supervise.

    Returns:
        total: scalar, sum over stages of heatmap term + PAF term (what is backpropagated).
        per_stage: per stage (heatmap term, PAF term), scalars still attached to the graph;
            callers that only log them should `.detach()`.
    """
    per_stage = [
        (masked_l2(heatmaps, heat_target, mask), masked_l2(pafs, paf_target, mask))
        for heatmaps, pafs in stages
    ]
    total = sum(h + p for h, p in per_stage)
    assert isinstance(total, Tensor), "stage_losses needs at least one stage"
    return total, per_stage
