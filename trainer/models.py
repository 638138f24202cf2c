"""OpenPose-style models: CMU-Pose, the paper's small NN and a CPU-sized tiny model.

Letters used in shapes below:
    N     samples in a batch
    S     side of the square input crop, in crop pixels
    h     side of the output maps in cells = S // stride
    K+1   heatmap channels (parts + background, `skeleton.num_heatmaps`, 19 for CMU)
    2L    PAF channels (`skeleton.num_pafs`, 38 for CMU); channel 2l = x, 2l+1 = y of limb l

Every model is built as `MODELS[name](skeleton, stride, **kwargs)`, takes the float input made
by `preprocess` and returns one (heatmaps (N, K+1, h, h), pafs (N, 2L, h, h)) pair per stage,
first stage first, for intermediate supervision (Cao et al. 2017, eq. 5). The last stage is
the prediction. Layouts and parameter counts are in docs/models.md.

Initialisation: hidden convolutions use He (fan-in, ReLU) normal weights and zero bias so that
deep plain stacks (small: 19 layers) keep their activation scale; the last 1x1 convolution of
every stage starts at zero weights with zero bias except background bias 1, so an untrained
model already predicts "all background, no limbs" and a short run does not spend its first
steps unlearning random outputs.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lcdata.errors import LcposeError, one_line
from lcdata.labels.skeleton import Skeleton
from trainer.config import MODEL_NAMES

Stages = list[tuple[Tensor, Tensor]]
"""Per stage (heatmaps (N, K+1, h, h), pafs (N, 2L, h, h)) float32, first stage first."""


def preprocess(images: Tensor) -> Tensor:
    """uint8 crops -> network input, the one normalisation used by training, export and eval.

    Args:
        images: (N, S, S, 3) uint8, channel order as stored in the lcdata store (RGB).

    Returns:
        (N, 3, S, S) float32, x / 256 - 0.5 as CMU-Pose does (values in [-0.5, 0.496]).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise LcposeError(
            f"preprocess: expected uint8 images of shape (N, S, S, 3), got {images.dtype} "
            f"of shape {tuple(images.shape)}"
        )
    return images.permute(0, 3, 1, 2).float() / 256.0 - 0.5


def _conv(
    cin: int, cout: int, kernel: int, *, relu: bool = True, bn: bool = False, dilation: int = 1
) -> nn.Sequential:
    """Same-padded conv (+ BatchNorm) (+ ReLU); the conv is always child "conv"."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv"] = nn.Conv2d(
        cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=not bn
    )
    if bn:
        layers["bn"] = nn.BatchNorm2d(cout)
    if relu:
        layers["relu"] = nn.ReLU(inplace=True)
    return nn.Sequential(layers)


def _num_pools(name: str, stride: int, allowed: tuple[int, ...]) -> int:
    if stride not in allowed:
        raise LcposeError(f"model {name!r}: stride {stride} not supported (choose from {allowed})")
    return stride.bit_length() - 1  # stride 4 -> 2 poolings, 8 -> 3


def _init_weights(model: nn.Module, heads: dict[nn.Conv2d, int | None]) -> None:
    """He-normal hidden convs; output heads zeroed by `zero_head` (see module doc).

    Args:
        heads: every output conv -> its background channel (None for PAF heads).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m not in heads:
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for head, background in heads.items():
        zero_head(head, background=background)


def zero_head(head: nn.Conv2d, *, background: int | None) -> None:
    """Zero an output conv's weight and bias, then set bias 1 at channel `background` if given.

    With all heads zeroed an untrained model predicts background 1, parts 0 and PAFs 0
    whatever the input.
    """
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        if background is not None:
            head.bias[background] = 1.0


class PoseModel(nn.Module):
    """Base of every model: `name`, `skeleton`, `stride`, `model_kwargs`, `num_stages`."""

    name: str = ""

    def __init__(self, skeleton: Skeleton, stride: int, model_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.skeleton = skeleton
        self.stride = stride
        self.model_kwargs = dict(model_kwargs)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise LcposeError(
                f"model {self.name!r}: expected input (N, 3, S, S) with S a multiple of stride "
                f"{self.stride}, got {tuple(x.shape)}"
            )


# --------------------------------------------------------------------------------------------
# CMU-Pose


# (name, index in torchvision's vgg19().features, in_channels, out_channels); max-pools follow
# conv1_2, conv2_2 and conv3_4 (features.4, .9, .18), giving stride 8 at conv4_1.
VGG19_CONVS: tuple[tuple[str, int, int, int], ...] = (
    ("conv1_1", 0, 3, 64), ("conv1_2", 2, 64, 64),
    ("conv2_1", 5, 64, 128), ("conv2_2", 7, 128, 128),
    ("conv3_1", 10, 128, 256), ("conv3_2", 12, 256, 256),
    ("conv3_3", 14, 256, 256), ("conv3_4", 16, 256, 256),
    ("conv4_1", 19, 256, 512), ("conv4_2", 21, 512, 512),
)  # fmt: skip
_VGG_POOL_AFTER = ("conv1_2", "conv2_2", "conv3_4")


class CmuPose(PoseModel):
    """CMU-Pose (Cao et al. 2017), 52.3M parameters with 6 stages and the CMU skeleton.

    Backbone: VGG-19 conv1_1..conv4_2 (3 max-pools, stride 8), then conv4_3_CPM (3x3, 256)
    and conv4_4_CPM (3x3, 128) -> features F (N, 128, h, h). Stage 1, per branch: three 3x3
    128 convs, 1x1 512, 1x1 out. Stages 2..T, per branch, on concat(F, heatmaps, pafs) of the
    previous stage: five 7x7 128 convs, 1x1 128, 1x1 out. ReLU after every conv but the outputs.
    (CMU's Caffe model concatenates (pafs, heatmaps, F); porting its weights would need the
    input channels of each stage's first conv permuted.)
    """

    name = "cmu"

    def __init__(self, skeleton: Skeleton, stride: int = 8, *, num_stages: int = 6) -> None:
        if stride != 8:
            raise LcposeError(f"model 'cmu': stride must be 8 (VGG-19 backbone), got {stride}")
        if num_stages < 1:
            raise LcposeError(f"model 'cmu': num_stages must be >= 1, got {num_stages}")
        super().__init__(skeleton, stride, {"num_stages": num_stages})
        self.num_stages = num_stages
        backbone: OrderedDict[str, nn.Module] = OrderedDict()
        for name, _, cin, cout in VGG19_CONVS:
            backbone[name] = _conv(cin, cout, 3)
            if name in _VGG_POOL_AFTER:
                backbone["pool" + name[4]] = nn.MaxPool2d(2, 2)
        backbone["conv4_3_CPM"] = _conv(512, 256, 3)
        backbone["conv4_4_CPM"] = _conv(256, 128, 3)
        self.backbone = nn.Sequential(backbone)

        k1, l2 = skeleton.num_heatmaps, skeleton.num_pafs
        self.stages = nn.ModuleList()
        heads: dict[nn.Conv2d, int | None] = {}
        for t in range(num_stages):
            branches = nn.ModuleDict()
            for branch, cout in (("heatmaps", k1), ("pafs", l2)):
                if t == 0:
                    layers = [_conv(128, 128, 3) for _ in range(3)] + [_conv(128, 512, 1)]
                    last_in = 512
                else:
                    layers = [_conv(128 + k1 + l2, 128, 7)]
                    layers += [_conv(128, 128, 7) for _ in range(4)] + [_conv(128, 128, 1)]
                    last_in = 128
                layers.append(_conv(last_in, cout, 1, relu=False))
                heads[layers[-1].conv] = skeleton.num_parts if branch == "heatmaps" else None
                branches[branch] = nn.Sequential(*layers)
            self.stages.append(branches)
        _init_weights(self, heads)

    def forward(self, x: Tensor) -> Stages:
        """(N, 3, S, S) float from `preprocess` -> per-stage (heatmaps, pafs), S // 8 cells."""
        self._check_input(x)
        features = self.backbone(x)
        out: Stages = []
        inp = features
        for stage in self.stages:
            heatmaps, pafs = stage["heatmaps"](inp), stage["pafs"](inp)
            out.append((heatmaps, pafs))
            inp = torch.cat([features, heatmaps, pafs], dim=1)
        return out


def load_backbone_weights(model: CmuPose, path: str | Path) -> None:
    """Copy ImageNet VGG-19 conv weights (torchvision key names) into conv1_1..conv4_2.

    Args:
        model: the CmuPose to update in place.
        path: a file written by `torch.save(torchvision.models.vgg19(...).state_dict())`, or
            any dict holding at least `features.{i}.weight/bias` for the 10 conv indices
            0, 2, 5, 7, 10, 12, 14, 16, 19, 21 (other keys, e.g. the classifier, are ignored).
            Loaded with `weights_only=True`, so the file cannot run code.

    Raises:
        LcposeError: missing file, unreadable file, a missing key or a shape mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise LcposeError(f"{path}: backbone weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise LcposeError(f"{path}: not a readable state dict ({one_line(err)})") from None
    if not isinstance(state, dict):
        raise LcposeError(f"{path}: expected a VGG-19 state dict, got {type(state).__name__}")
    new: dict[str, Tensor] = {}
    for name, index, _, _ in VGG19_CONVS:
        for kind in ("weight", "bias"):
            src = f"features.{index}.{kind}"
            dst = getattr(model.backbone, name).conv
            want = getattr(dst, kind).shape
            if src not in state:
                raise LcposeError(f"{path}: key {src!r} ({name}.{kind}) missing")
            value = state[src]
            if not isinstance(value, Tensor) or value.shape != want:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise LcposeError(
                    f"{path}: {src!r} ({name}.{kind}) has shape {got}, want {tuple(want)}"
                )
            new[f"backbone.{name}.conv.{kind}"] = value
    with torch.no_grad():
        params = dict(model.named_parameters())
        for key, value in new.items():
            params[key].copy_(value)


class SmallPose(PoseModel):
    """The paper's "small NN": a plain stack of 19 convolutions, 5,224,057 parameters (CMU).

    Layers (all 3x3 + ReLU unless noted; M = max-pool 2x2):
        3-64, 64-64, M, 64-128, 128-128, M, 128-256, 256-256, 256-256, 256-256, M,
        256-256 x3, 256-128, 128-128 x5, 1x1 128-512, 1x1 512-(K+1+2L) (no ReLU).
    The last layer's K+1+2L = 57 outputs split into heatmaps and PAFs; one stage. Stride 4
    drops the third max-pool (same parameters, 4x the cost of the stride-8 layers).
    """

    name = "small"

    def __init__(self, skeleton: Skeleton, stride: int = 8) -> None:
        num_pools = _num_pools(self.name, stride, (4, 8))
        super().__init__(skeleton, stride, {})
        self.num_stages = 1
        spec = [(3, 64), (64, 64), "M", (64, 128), (128, 128), "M"]
        spec += [(128, 256), (256, 256), (256, 256), (256, 256), "M"]
        spec += [(256, 256)] * 3 + [(256, 128)] + [(128, 128)] * 5
        layers: list[nn.Module] = []
        pools = 0
        for item in spec:
            if item == "M":
                pools += 1
                if pools <= num_pools:
                    layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(_conv(*item, 3))
        layers.append(_conv(128, 512, 1))
        out = skeleton.num_heatmaps + skeleton.num_pafs
        layers.append(_conv(512, out, 1, relu=False))
        self.layers = nn.Sequential(*layers)
        # heatmap channels come first, so the background channel keeps its index
        _init_weights(self, {layers[-1].conv: skeleton.num_parts})

    def forward(self, x: Tensor) -> Stages:
        """(N, 3, S, S) float from `preprocess` -> [(heatmaps, pafs)], S // stride cells."""
        self._check_input(x)
        y = self.layers(x)
        k1 = self.skeleton.num_heatmaps
        return [(y[:, :k1], y[:, k1:])]


# --------------------------------------------------------------------------------------------
# tiny


class TinyPose(PoseModel):
    """A few hundred thousand parameters for CPU runs: the demo, the tests, the synthetic set.

    Backbone (3x3 conv + BatchNorm + ReLU; M = max-pool 2x2, one per factor 2 of the stride):
        3-16, M, 16-32, M, 32-W, [M if stride 8], W-W  -> features F (N, W, h, h).
    Stage t, shared by both outputs: three 3x3 W-W convs (+BN+ReLU) with dilation 1, 2, 4
    (the first takes concat(F, heatmaps, pafs) of stage t-1 from stage 2 on), then two 1x1
    heads W -> K+1 and W -> 2L. Dilation widens the receptive field cheaply, which PAFs need.
    """

    name = "tiny"

    def __init__(
        self, skeleton: Skeleton, stride: int = 4, *, num_stages: int = 2, width: int = 64
    ) -> None:
        num_pools = _num_pools(self.name, stride, (4, 8))
        if num_stages < 1 or width < 1:
            raise LcposeError(
                f"model 'tiny': num_stages and width must be >= 1, got {num_stages}, {width}"
            )
        super().__init__(skeleton, stride, {"num_stages": num_stages, "width": width})
        self.num_stages = num_stages
        backbone: list[nn.Module] = [_conv(3, 16, 3, bn=True), nn.MaxPool2d(2, 2)]
        backbone += [_conv(16, 32, 3, bn=True), nn.MaxPool2d(2, 2), _conv(32, width, 3, bn=True)]
        if num_pools == 3:
            backbone.append(nn.MaxPool2d(2, 2))
        backbone.append(_conv(width, width, 3, bn=True))
        self.backbone = nn.Sequential(*backbone)

        k1, l2 = skeleton.num_heatmaps, skeleton.num_pafs
        self.stages = nn.ModuleList()
        heads: dict[nn.Conv2d, int | None] = {}
        for t in range(num_stages):
            cin = width if t == 0 else width + k1 + l2
            trunk = nn.Sequential(
                _conv(cin, width, 3, bn=True),
                _conv(width, width, 3, bn=True, dilation=2),
                _conv(width, width, 3, bn=True, dilation=4),
            )
            stage = nn.ModuleDict(
                {
                    "trunk": trunk,
                    "heatmaps": nn.Conv2d(width, k1, 1),
                    "pafs": nn.Conv2d(width, l2, 1),
                }
            )
            heads[stage["heatmaps"]] = skeleton.num_parts
            heads[stage["pafs"]] = None
            self.stages.append(stage)
        _init_weights(self, heads)

    def forward(self, x: Tensor) -> Stages:
        """(N, 3, S, S) float from `preprocess` -> per-stage (heatmaps, pafs), S // stride."""
        self._check_input(x)
        features = self.backbone(x)
        out: Stages = []
        inp = features
        for stage in self.stages:
            z = stage["trunk"](inp)
            heatmaps, pafs = stage["heatmaps"](z), stage["pafs"](z)
            out.append((heatmaps, pafs))
            inp = torch.cat([features, heatmaps, pafs], dim=1)
        return out


MODELS: dict[str, type[PoseModel]] = {"cmu": CmuPose, "small": SmallPose, "tiny": TinyPose}
assert tuple(MODELS) == MODEL_NAMES, "trainer.config.MODEL_NAMES lists the models"


def build_model(name: str, skeleton: Skeleton, stride: int, **model_kwargs: Any) -> PoseModel:
    """`MODELS[name](skeleton, stride, **model_kwargs)` with one-line errors for bad choices."""
    if name not in MODELS:
        raise LcposeError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    try:
        return MODELS[name](skeleton, stride, **model_kwargs)
    except TypeError as err:  # an option this model does not take
        raise LcposeError(f"model {name!r}: bad options {model_kwargs}: {err}") from None


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def describe(model: PoseModel) -> dict[str, Any]:
    """JSON-safe summary for checkpoints and exported teachers."""
    return {
        "model_name": model.name,
        "stride": model.stride,
        "num_stages": model.num_stages,
        "num_params": num_params(model),
        "model_kwargs": dict(model.model_kwargs),
        "skeleton": model.skeleton.to_attrs(),
    }
