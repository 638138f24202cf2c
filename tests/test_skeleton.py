from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lcdata.errors import LcposeError
from lcdata.labels.skeleton import CMU_SKELETON, COCO_PART_NAMES, Skeleton


def test_channel_layout(skeleton: Skeleton) -> None:
    assert skeleton.num_parts == 18 and skeleton.num_limbs == 19
    assert skeleton.num_heatmaps == 19 and skeleton.num_pafs == 38
    assert skeleton.names[skeleton.root] == "neck"


def test_attrs_round_trip(skeleton: Skeleton) -> None:
    assert Skeleton.from_attrs(skeleton.to_attrs()) == skeleton


def test_coco_mapping_names(skeleton: Skeleton) -> None:
    for k, c in enumerate(skeleton.coco_index):
        if c >= 0:
            assert skeleton.names[k] == COCO_PART_NAMES[c]
    assert sorted(c for c in skeleton.coco_index if c >= 0) == list(range(17))


def test_neck_is_shoulder_midpoint_only_when_both_labelled(skeleton: Skeleton) -> None:
    kps = np.zeros((2, 17, 3), np.float32)
    kps[:, 5] = (10, 20, 2)  # left shoulder
    kps[0, 6] = (30, 40, 1)  # right shoulder, occluded
    parts = skeleton.from_coco(kps)
    np.testing.assert_allclose(parts[0, 1], (20, 30, 1))
    np.testing.assert_allclose(parts[1, 1], (0, 0, 0))
    assert parts[0, 2, 0] == 30 and parts[0, 5, 0] == 10  # r_sho <- COCO 6, l_sho <- COCO 5


def test_to_coco_inverts_from_coco(skeleton: Skeleton) -> None:
    rng = np.random.default_rng(0)
    kps = np.concatenate([rng.uniform(0, 100, (3, 17, 2)), rng.integers(0, 3, (3, 17, 1))], -1)
    np.testing.assert_allclose(skeleton.to_coco(skeleton.from_coco(kps)), kps.astype(np.float32))


def test_flip_permutations_are_involutions(skeleton: Skeleton) -> None:
    perm = skeleton.flip_permutation()
    assert (perm[perm] == np.arange(18)).all()
    assert skeleton.names[perm[skeleton.names.index("left_wrist")]] == "right_wrist"
    limb_perm = skeleton.limb_flip_permutation()
    assert (limb_perm[limb_perm] == np.arange(19)).all()
    for limb, mirrored in enumerate(limb_perm):
        a, b = skeleton.limbs[limb]
        assert skeleton.limbs[mirrored] == (perm[a], perm[b])
    paf_perm, sign = skeleton.paf_flip()
    assert paf_perm.shape == (38,) and (sign[0::2] == -1).all() and (sign[1::2] == 1).all()


def test_grouping_order_grows_from_root(skeleton: Skeleton) -> None:
    reached = {skeleton.root}
    order = skeleton.grouping_order()
    assert sorted(order) == list(range(19))
    for limb in order:
        a, b = skeleton.limbs[limb]
        assert a in reached or b in reached
        reached |= {a, b}


def test_rejects_limb_set_not_closed_under_flip() -> None:
    with pytest.raises(LcposeError, match="no mirror limb"):
        dataclasses.replace(CMU_SKELETON, limbs=CMU_SKELETON.limbs[:-1])


def test_rejects_malformed_attrs() -> None:
    with pytest.raises(LcposeError, match="malformed"):
        Skeleton.from_attrs({"names": ["a"]})
