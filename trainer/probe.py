"""A student's loss on a fixed probe of training samples: own targets against the clean truth.

The probe (`lcdata.correction.clean.clean_probe`) holds unaugmented training samples with two
sets of maps: the targets the student trained on and the clean truth rendered through the
same crops. Evaluated at every kept checkpoint, the two losses tell apart learning the signal
(both fall) from fitting the label defects (the training-target loss keeps falling while
the clean loss stops falling or rises).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainer.losses import stage_losses
from trainer.models import preprocess


@torch.no_grad()
def probe_losses(
    model: nn.Module, probe: dict[str, np.ndarray], *, batch_size: int = 32
) -> dict[str, float]:
    """Eq. 4 (masked L2 summed over stages, per sample) of `model` on the probe.

    Args:
        model: a pose model in eval mode on CPU, as `trainer.checkpoint.model_from_checkpoint`
            gives it.
        probe: `clean_probe`'s arrays (images (N, S, S, 3) uint8, masks (N, 1, h, h), maps
            (N, C, h, h) float32).
        batch_size: samples per forward pass (the result does not depend on it).

    Returns:
        {"loss_train", "loss_clean"}: the mean per-sample loss against the stored training
        targets and against the clean truth, in the training loss's units (`trainer.losses`),
        fp32 on the CPU.
    """
    n = len(probe["images"])
    totals = {"loss_train": 0.0, "loss_clean": 0.0}
    model.eval()
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        stages = model(preprocess(torch.from_numpy(probe["images"][sl])))
        mask = torch.from_numpy(probe["masks"][sl])
        for key, prefix in (("loss_train", ""), ("loss_clean", "clean_")):
            loss, _ = stage_losses(
                stages,
                torch.from_numpy(probe[f"{prefix}heatmaps"][sl]),
                torch.from_numpy(probe[f"{prefix}pafs"][sl]),
                mask,
            )
            # stage_losses divides by the batch: weight each batch by its samples
            totals[key] += float(loss) * (sl.stop - sl.start)
    return {k: v / n for k, v in totals.items()}
