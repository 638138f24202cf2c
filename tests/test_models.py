"""Models: parameter counts, stage shapes, zero-initialised heads, VGG-19 weight loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lcdata.errors import LcposeError
from lcdata.labels.skeleton import CMU_SKELETON
from trainer.models import (
    MODELS,
    VGG19_CONVS,
    CmuPose,
    SmallPose,
    TinyPose,
    build_model,
    describe,
    load_backbone_weights,
    num_params,
    preprocess,
)


@pytest.fixture(scope="module")
def cmu() -> CmuPose:
    """One CMU-Pose for the whole module: 52M parameters take a second to build."""
    torch.manual_seed(0)
    return CmuPose(CMU_SKELETON).eval()


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def test_models_dict_names_match_classes() -> None:
    assert MODELS == {"cmu": CmuPose, "small": SmallPose, "tiny": TinyPose}
    assert all(cls.name == name for name, cls in MODELS.items())


def test_cmu_counts_the_papers_52_3m_parameters(cmu: CmuPose) -> None:
    n = num_params(cmu)
    assert round(n / 1e6, 1) == 52.3
    assert n == 52_311_446  # the exact count quoted in docs/models.md


def test_small_counts_about_5_2m_parameters_in_19_convs() -> None:
    model = SmallPose(CMU_SKELETON)
    n = num_params(model)
    assert round(n / 1e6, 1) == 5.2
    assert n == 5_224_057  # docs/models.md
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 19


@pytest.mark.parametrize("stride", [4, 8])
@pytest.mark.parametrize("num_stages", [2, 3])
def test_tiny_has_a_few_hundred_thousand_parameters(stride: int, num_stages: int) -> None:
    n = num_params(TinyPose(CMU_SKELETON, stride, num_stages=num_stages))
    assert 100_000 <= n <= 900_000


@pytest.mark.parametrize(
    ("name", "stride", "kwargs", "num_stages"),
    [
        ("small", 4, {}, 1),
        ("small", 8, {}, 1),
        ("tiny", 4, {}, 2),
        ("tiny", 8, {}, 2),
        ("tiny", 4, {"num_stages": 3, "width": 32}, 3),
    ],
)
def test_stages_and_shapes(name: str, stride: int, kwargs: dict, num_stages: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, CMU_SKELETON, stride, **kwargs).eval()
    with torch.no_grad():
        stages = model(preprocess(_images(2, 64)))
    assert len(stages) == num_stages == model.num_stages
    for heatmaps, pafs in stages:
        assert heatmaps.shape == (2, CMU_SKELETON.num_heatmaps, 64 // stride, 64 // stride)
        assert pafs.shape == (2, CMU_SKELETON.num_pafs, 64 // stride, 64 // stride)
        assert heatmaps.dtype == pafs.dtype == torch.float32


def test_cmu_stages_and_shapes(cmu: CmuPose) -> None:
    with torch.no_grad():
        stages = cmu(preprocess(_images(1, 64)))
    assert len(stages) == 6
    for heatmaps, pafs in stages:
        assert heatmaps.shape == (1, 19, 8, 8)
        assert pafs.shape == (1, 38, 8, 8)


def _assert_background_only(stages) -> None:
    bg = CMU_SKELETON.num_parts
    for heatmaps, pafs in stages:
        assert torch.equal(heatmaps[:, bg], torch.ones_like(heatmaps[:, bg]))
        assert torch.equal(heatmaps[:, :bg], torch.zeros_like(heatmaps[:, :bg]))
        assert torch.equal(pafs, torch.zeros_like(pafs))


@pytest.mark.parametrize(("name", "stride"), [("small", 8), ("tiny", 4), ("tiny", 8)])
@pytest.mark.parametrize("seed", [0, 1])
def test_untrained_heads_predict_background_everywhere(name: str, stride: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_model(name, CMU_SKELETON, stride)
    model.train()  # BatchNorm on batch statistics: still background only
    with torch.no_grad():
        _assert_background_only(model(preprocess(_images(2, 32, seed))))
    _assert_background_only(model.eval()(torch.randn(1, 3, 32, 32) * 10))


def test_untrained_cmu_predicts_background_everywhere(cmu: CmuPose) -> None:
    with torch.no_grad():
        _assert_background_only(cmu(preprocess(_images(1, 32, 3))))


def test_hidden_layers_are_not_zero() -> None:
    """Only the output heads start at zero; a zero trunk could never learn."""
    model = TinyPose(CMU_SKELETON, 4)
    assert model.stages[0]["trunk"][0].conv.weight.abs().sum() > 0
    assert model.stages[0]["heatmaps"].weight.abs().sum() == 0


def test_preprocess_layout_and_scale() -> None:
    images = torch.zeros((1, 2, 2, 3), dtype=torch.uint8)
    images[0, 0, 1] = torch.tensor([255, 128, 0], dtype=torch.uint8)  # pixel y=0, x=1
    x = preprocess(images)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    assert x[0, :, 0, 1].tolist() == [255 / 256 - 0.5, 0.0, -0.5]
    assert (x[0, :, 1, 1] == -0.5).all()


def test_preprocess_rejects_float_and_chw() -> None:
    with pytest.raises(LcposeError, match=r"expected uint8 images of shape \(N, S, S, 3\)"):
        preprocess(torch.zeros((1, 8, 8, 3)))
    with pytest.raises(LcposeError, match=r"got torch.uint8 of shape \(1, 3, 8, 8\)"):
        preprocess(torch.zeros((1, 3, 8, 8), dtype=torch.uint8))


def test_bad_strides_and_names_are_refused() -> None:
    with pytest.raises(LcposeError, match="model 'cmu': stride must be 8"):
        CmuPose(CMU_SKELETON, 4)
    with pytest.raises(LcposeError, match=r"model 'tiny': stride 16 not supported"):
        TinyPose(CMU_SKELETON, 16)
    with pytest.raises(LcposeError, match=r"unknown model 'huge' \(choose from cmu, small, tiny\)"):
        build_model("huge", CMU_SKELETON, 8)
    with pytest.raises(LcposeError, match="model 'small': bad options"):
        build_model("small", CMU_SKELETON, 8, num_stages=3)


def test_input_not_a_multiple_of_stride_is_refused() -> None:
    with pytest.raises(LcposeError, match=r"S a multiple of stride 8, got \(1, 3, 36, 36\)"):
        TinyPose(CMU_SKELETON, 8)(torch.zeros(1, 3, 36, 36))


def test_describe_is_json_safe_and_complete() -> None:
    import json

    info = describe(TinyPose(CMU_SKELETON, 8, num_stages=3, width=32))
    assert json.loads(json.dumps(info)) == info
    assert info["model_name"] == "tiny" and info["stride"] == 8 and info["num_stages"] == 3
    assert info["model_kwargs"] == {"num_stages": 3, "width": 32}
    assert info["skeleton"] == CMU_SKELETON.to_attrs()
    rebuilt = build_model("tiny", CMU_SKELETON, 8, **info["model_kwargs"])
    assert num_params(rebuilt) == info["num_params"]


def _fake_vgg19_features(seed: int) -> dict[str, torch.Tensor]:
    """torchvision vgg19().state_dict() keys and shapes for conv1_1..conv4_2, random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for _, index, cin, cout in VGG19_CONVS:
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen)
        state[f"features.{index}.bias"] = torch.randn(cout, generator=gen)
    state["classifier.6.bias"] = torch.randn(1000, generator=gen)  # ignored
    return state


def test_backbone_weights_map_torchvision_names(cmu: CmuPose, tmp_path) -> None:
    state = _fake_vgg19_features(1)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    before = cmu.backbone.conv4_3_CPM.conv.weight.clone()
    load_backbone_weights(cmu, path)
    assert torch.equal(cmu.backbone.conv1_1.conv.weight, state["features.0.weight"])
    assert torch.equal(cmu.backbone.conv2_2.conv.bias, state["features.7.bias"])
    assert torch.equal(cmu.backbone.conv3_4.conv.weight, state["features.16.weight"])
    assert torch.equal(cmu.backbone.conv4_2.conv.weight, state["features.21.weight"])
    for name, index, _, _ in VGG19_CONVS:
        conv = getattr(cmu.backbone, name).conv
        assert torch.equal(conv.weight, state[f"features.{index}.weight"])
        assert torch.equal(conv.bias, state[f"features.{index}.bias"])
    assert torch.equal(cmu.backbone.conv4_3_CPM.conv.weight, before)  # not a VGG layer


def test_backbone_weights_refuse_bad_files(cmu: CmuPose, tmp_path) -> None:
    with pytest.raises(LcposeError, match="backbone weights file not found"):
        load_backbone_weights(cmu, tmp_path / "absent.pth")

    state = {"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(LcposeError, match=r"key 'features.2.weight' \(conv1_2.weight\) missing"):
        load_backbone_weights(cmu, tmp_path / "short.pth")

    state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(
        LcposeError, match=r"'features.0.weight' \(conv1_1.weight\) has shape \(64, 3, 5, 5\)"
    ):
        load_backbone_weights(cmu, tmp_path / "wrong.pth")

    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(LcposeError, match="not a readable state dict"):
        load_backbone_weights(cmu, tmp_path / "garbage.pth")
