"""The clean probe: the clean truth rendered into stored crops, and a model's losses on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lcdata.correction.clean import clean_probe, probe_indices
from lcdata.errors import LcposeError
from tests.oracle_teacher import clean_and_noisy_stores
from trainer.probe import probe_losses

QUANT = 2e-3  # stored maps are float16: half a unit in the last place near 1 is 2.4e-4


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return clean_and_noisy_stores(tmp_path_factory.mktemp("probe"), seed=5)


def test_probe_of_a_clean_label_store_is_its_own_gt(stores):
    """Rendering the clean file through meta/affine reproduces the GT maps the builder
    rendered from the same file (flipped crops included)."""
    probe = clean_probe(stores["clean_store"], stores["clean"], size=40)
    assert probe["images"].shape == (40, 128, 128, 3) and probe["masks"].shape == (40, 1, 32, 32)
    np.testing.assert_allclose(probe["clean_heatmaps"], probe["heatmaps"], atol=QUANT)
    np.testing.assert_allclose(probe["clean_pafs"], probe["pafs"], atol=QUANT)
    assert probe["heatmaps"][:, :-1].max() > 0.9  # there are persons to compare


def test_probe_of_a_noisy_store_shows_what_the_labels_miss(stores):
    noisy = clean_probe(stores["noisy_store"], stores["clean"], size=40)
    parts = np.s_[:, :-1]
    missing = noisy["clean_heatmaps"][parts] - noisy["heatmaps"][parts]
    # the noisy labels lack keypoints and persons that the clean truth has, never the reverse
    assert missing.max() > 0.5
    assert missing.min() > -QUANT


def test_probe_indices_spread_over_the_store():
    assert probe_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert probe_indices(3, 256).tolist() == [0, 1, 2]
    with pytest.raises(LcposeError, match="probe needs samples"):
        probe_indices(0, 4)


class _Zeros(nn.Module):
    """Two stages of all-zero maps: the loss is half the masked squared targets."""

    def forward(self, x):
        n = x.shape[0]
        return [(torch.zeros(n, 19, 32, 32), torch.zeros(n, 38, 32, 32))] * 2


def test_probe_losses_match_numpy_and_do_not_depend_on_the_batch(stores):
    probe = clean_probe(stores["noisy_store"], stores["clean"], size=40)
    m = probe["masks"]

    def expected(heat, pafs):  # eq. 4 with zero predictions, two stages, mean per sample
        per = 0.5 * ((heat * m) ** 2).sum(axis=(1, 2, 3)) + 0.5 * ((pafs * m) ** 2).sum(
            axis=(1, 2, 3)
        )
        return 2 * float(per.mean())

    got = probe_losses(_Zeros(), probe, batch_size=7)
    assert got["loss_train"] == pytest.approx(expected(probe["heatmaps"], probe["pafs"]), rel=1e-5)
    assert got["loss_clean"] == pytest.approx(
        expected(probe["clean_heatmaps"], probe["clean_pafs"]), rel=1e-5
    )
    assert got["loss_clean"] > got["loss_train"]  # the truth has more to predict
    assert probe_losses(_Zeros(), probe, batch_size=40) == pytest.approx(got, rel=1e-6)
