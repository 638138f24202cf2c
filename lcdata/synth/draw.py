"""Pixels of the synthetic benchmark: backgrounds, figure appearance, silhouettes.

A figure is drawn as solid primitives (thick lines for limbs, a polygon for the torso,
discs for head, hands and ears) ordered by depth, far first. The same primitives drawn in a
single grey level give the figure's silhouette mask, so a figure's pixels in the image are
exactly its mask minus what nearer figures cover.

Left/right cue (besides the face, see `lcdata.synth.pose`): each person's left limbs are a
lighter shade and its right limbs a darker shade of the same garment colour.

Images are (H, W, 3) uint8 BGR (what `cv2.imwrite` expects); points are (x, y) image pixels
with pixel centres at integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lcdata.synth.pose import KP, Figure

SHIFT = 4
"""Sub-pixel bits of cv2 drawing coordinates: points are drawn at 1/16 px precision."""
_ONE = 1 << SHIFT

LIGHTER_LEFT = 0.4  # left shade = colour + 0.4 * (255 - colour)
DARKER_RIGHT = 0.6  # right shade = 0.6 * colour

# line widths as fractions of the standing height H (drawn at least 1 px wide)
_WIDTH = {"upper_arm": 0.055, "forearm": 0.045, "thigh": 0.075, "shank": 0.06, "neck": 0.05}
_WIDTH.update({"foot": 0.04, "torso_edge": 0.05})
_HAND_RADIUS = 0.025
_EAR_RADIUS = 0.018


@dataclass(frozen=True)
class Appearance:
    """Per-person colours, BGR uint8 triples."""

    shirt: tuple[int, int, int]
    pants: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shoes: tuple[int, int, int]


_SKIN_TONES = np.array(
    [[198, 224, 255], [160, 196, 234], [120, 160, 210], [90, 125, 175], [60, 85, 125]], np.float64
)  # BGR, light to dark


def _hsv_colour(rng: np.random.Generator, s_range, v_range) -> tuple[int, int, int]:
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(*s_range) * 255, rng.uniform(*v_range) * 255]]]
    ).astype(np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def sample_appearance(rng: np.random.Generator) -> Appearance:
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.05)
    hair = np.full(3, rng.uniform(15, 90)) * rng.uniform(0.8, 1.2, 3)
    return Appearance(
        shirt=_hsv_colour(rng, (0.25, 1.0), (0.3, 0.85)),
        pants=_hsv_colour(rng, (0.1, 0.9), (0.2, 0.75)),
        skin=tuple(int(c) for c in np.clip(skin, 0, 255)),
        hair=tuple(int(c) for c in np.clip(hair, 0, 255)),
        shoes=_hsv_colour(rng, (0.0, 0.5), (0.05, 0.35)),
    )


def _shade(colour: tuple[int, int, int], side: str) -> tuple[int, int, int]:
    c = np.asarray(colour, np.float64)
    c = c + LIGHTER_LEFT * (255 - c) if side == "left" else DARKER_RIGHT * c
    return tuple(int(round(v)) for v in c)


def background(rng: np.random.Generator, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 textured, cluttered background: smooth colour field, noise, shapes."""
    h, w = size_hw
    coarse = rng.uniform(30, 225, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3))
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.normal(0, 1, (h // 4 + 1, w // 4 + 1, 3)), (w, h))
    img += fine * rng.uniform(0, 18) + rng.normal(0, rng.uniform(2, 10), (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 16))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        size = rng.uniform(0.04, 0.35) * max(h, w)
        shape = rng.integers(4)
        p = _fixed(np.array([x, y]))
        if shape == 0:
            q = _fixed(np.array([x, y]) + rng.uniform(-1, 1, 2) * size)
            cv2.rectangle(img, p, q, colour, -1, cv2.LINE_8, SHIFT)
        elif shape == 1:
            cv2.circle(img, p, int(size / 2 * _ONE), colour, -1, cv2.LINE_8, SHIFT)
        elif shape == 2:  # limb-like distractor bars
            q = _fixed(np.array([x, y]) + rng.uniform(-1, 1, 2) * size)
            cv2.line(img, p, q, colour, int(rng.integers(1, 7)), cv2.LINE_8, SHIFT)
        else:
            axes = (int(size / 2 * _ONE), int(size / 2 * rng.uniform(0.2, 1) * _ONE))
            cv2.ellipse(img, p, axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_8, SHIFT)
    return img


def finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sensor-like noise and an occasional slight blur over the whole (H, W, 3) uint8 image."""
    out = image.astype(np.float32)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 0.9))
    out += rng.normal(0, rng.uniform(1, 6), out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _fixed(xy: np.ndarray, off: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """A point in cv2's fixed-point coordinates (SHIFT fractional bits), moved by whole pixels
    `off` after rounding, so that a figure rasterises the same on any canvas."""
    return (
        int(round(float(xy[0]) * _ONE)) + off[0] * _ONE,
        int(round(float(xy[1]) * _ONE)) + off[1] * _ONE,
    )


def _width(fig: Figure, name: str) -> int:
    return max(1, int(round(_WIDTH[name] * fig.height)))


def _primitives(fig: Figure) -> list[tuple[float, int, tuple]]:
    """Depth-sorted drawing list of a figure: (depth, order, (kind, role, *geometry)).

    Roles name a colour: shirt_left, shirt_right, pants_left, pants_right, skin, shoes,
    plus the face group (drawn together, on top of the head).
    """
    kp, d = fig.keypoints_xy, fig.keypoint_depth
    prims: list[tuple[float, int, tuple]] = []

    def seg(a: str, b: str, width: str, role: str) -> None:
        prims.append(
            (
                (d[KP[a]] + d[KP[b]]) / 2,
                len(prims),
                ("line", role, kp[KP[a]], kp[KP[b]], _width(fig, width)),
            )
        )

    for side in ("left", "right"):
        ankle = kp[KP[f"{side}_ankle"]]
        s = 0 if side == "left" else 1
        depth = d[KP[f"{side}_ankle"]]
        prims.append(
            (depth, len(prims), ("line", "shoes", ankle, fig.toes_xy[s], _width(fig, "foot")))
        )
        seg(f"{side}_knee", f"{side}_ankle", "shank", f"pants_{side}")
        seg(f"{side}_hip", f"{side}_knee", "thigh", f"pants_{side}")
        seg(f"{side}_shoulder", f"{side}_elbow", "upper_arm", f"shirt_{side}")
        seg(f"{side}_elbow", f"{side}_wrist", "forearm", f"shirt_{side}")
        prims.append(
            (
                d[KP[f"{side}_wrist"]] + 1e-3,
                len(prims),
                ("disc", "skin", fig.hands_xy[s], max(1.0, _HAND_RADIUS * fig.height)),
            )
        )
    corners = kp[[KP["left_shoulder"], KP["right_shoulder"], KP["right_hip"], KP["left_hip"]]]
    torso_depth = float(d[[KP["left_shoulder"], KP["right_shoulder"]]].mean())
    torso_depth = min(torso_depth, float(d[[KP["left_hip"], KP["right_hip"]]].mean()))
    prims.append((torso_depth, len(prims), ("torso", "shirt", corners, _width(fig, "torso_edge"))))
    neck_from = kp[[KP["left_shoulder"], KP["right_shoulder"]]].mean(0)
    prims.append(
        (
            fig.head_depth - 0.02 * fig.height,
            len(prims),
            ("line", "skin", neck_from, fig.head_xy, _width(fig, "neck")),
        )
    )
    prims.append((fig.head_depth, len(prims), ("head",)))
    prims.sort(key=lambda p: (p[0], p[1]))
    return prims


def _frame(fig: Figure, size_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(ox, oy, cw, ch): a canvas covering the image and the whole figure; image pixel
    (x, y) is canvas pixel (x - ox, y - oy)."""
    h, w = size_hw
    x0, y0, x1, y1 = fig.bounds()
    pad = fig.height * 0.1 + 2  # line half-widths, hands and ears stick out of the bounds
    ox, oy = int(np.floor(min(0.0, x0 - pad))), int(np.floor(min(0.0, y0 - pad)))
    cw, ch = int(np.ceil(max(w, x1 + pad))) - ox, int(np.ceil(max(h, y1 + pad))) - oy
    return ox, oy, cw, ch


def draw_figure(canvas: np.ndarray, fig: Figure, *, appearance: Appearance | None) -> None:
    """Draw `fig` into `canvas` in place, far primitives first.

    A figure that reaches past the canvas is drawn on a larger canvas holding all of it and
    cut back: cv2 clips a line that crosses the border before rasterising it, which can move
    its pixels, so this keeps the pixels of a figure independent of where it is cut (and
    equal to `silhouette`).

    Args:
        canvas: (H, W, 3) uint8 image, or (H, W) uint8 mask when `appearance` is None
            (everything is then drawn as 255: the figure's silhouette).
        fig: the figure, image pixels.
        appearance: colours; None draws the silhouette.
    """
    h, w = canvas.shape[:2]
    ox, oy, cw, ch = _frame(fig, (h, w))
    if (ox, oy, cw, ch) == (0, 0, w, h):
        _draw_on(canvas, fig, appearance, (0, 0))
        return
    big = np.zeros((ch, cw) + canvas.shape[2:], canvas.dtype)
    big[-oy : -oy + h, -ox : -ox + w] = canvas
    _draw_on(big, fig, appearance, (-ox, -oy))
    canvas[...] = big[-oy : -oy + h, -ox : -ox + w]


def _draw_on(
    canvas: np.ndarray, fig: Figure, appearance: Appearance | None, off: tuple[int, int]
) -> None:
    def colour(role: str):
        if appearance is None:
            return 255
        base, _, side = role.partition("_")
        c = getattr(appearance, base)
        return _shade(c, side) if side else c

    for _, _, prim in _primitives(fig):
        kind = prim[0]
        if kind == "line":
            _, role, a, b, width = prim
            cv2.line(canvas, _fixed(a, off), _fixed(b, off), colour(role), width, cv2.LINE_8, SHIFT)
        elif kind == "disc":
            _, role, c, r = prim
            cv2.circle(
                canvas, _fixed(c, off), int(round(r * _ONE)), colour(role), -1, cv2.LINE_8, SHIFT
            )
        elif kind == "torso":
            _, role, corners, width = prim
            pts = np.array([_fixed(c, off) for c in corners], np.int32)
            cv2.fillPoly(canvas, [pts], colour(role), cv2.LINE_8, SHIFT)
            # rounded outline so a torso seen edge-on still has some width
            cv2.polylines(canvas, [pts], True, colour(role), width, cv2.LINE_8, SHIFT)
        else:
            _draw_head(canvas, fig, off, appearance, colour)


def _draw_head(canvas, fig: Figure, off: tuple[int, int], appearance, colour) -> None:
    kp, r = fig.keypoints_xy, fig.head_radius
    centre = _fixed(fig.head_xy, off)
    ear_r = int(round(max(1.0, _EAR_RADIUS * fig.height) * _ONE))
    for side in ("left", "right"):  # ears behind the head disc
        cv2.circle(
            canvas,
            _fixed(kp[KP[f"{side}_ear"]], off),
            ear_r,
            colour("skin"),
            -1,
            cv2.LINE_8,
            SHIFT,
        )
    cv2.circle(canvas, centre, int(round(r * _ONE)), colour("skin"), -1, cv2.LINE_8, SHIFT)
    # Face details are drawn into silhouettes too (as 255): at small sizes an eye disc or the
    # nose can poke out of the head disc, and the mask must equal the drawn footprint.
    paint = appearance is not None
    # hair: the half of the head disc on the crown side, so "up" is visible in the pixels
    angle = float(np.degrees(np.arctan2(fig.up_xy[1], fig.up_xy[0])))
    axes = (int(round(r * _ONE)), int(round(r * _ONE)))
    hair = appearance.hair if paint else 255
    cv2.ellipse(canvas, centre, axes, angle, -75, 75, hair, -1, cv2.LINE_8, SHIFT)
    dark = tuple(int(c * 0.25) for c in appearance.skin) if paint else 255
    eye_r = int(round(max(0.6, 0.012 * fig.height) * _ONE))
    for side in ("left", "right"):
        cv2.circle(canvas, _fixed(kp[KP[f"{side}_eye"]], off), eye_r, dark, -1, cv2.LINE_8, SHIFT)
    nose_col = tuple(int(c * 0.6) for c in appearance.skin) if paint else 255
    nose_w = max(1, int(round(0.02 * fig.height)))
    cv2.line(
        canvas,
        _fixed((fig.head_xy + kp[KP["nose"]]) / 2, off),
        _fixed(kp[KP["nose"]], off),
        nose_col,
        nose_w,
        cv2.LINE_8,
        SHIFT,
    )


def silhouette(fig: Figure, size_hw: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The figure's mask inside an image of `size_hw` and its whole silhouette area.

    Returns:
        mask: (H, W) bool, pixels of the figure inside the image (occlusion not applied);
            exactly the pixels `draw_figure` paints there.
        total_px: pixel count of the whole silhouette, including parts outside the image.
    """
    h, w = size_hw
    ox, oy, cw, ch = _frame(fig, size_hw)
    canvas = np.zeros((ch, cw), np.uint8)
    _draw_on(canvas, fig, None, (-ox, -oy))
    mask = canvas[-oy : -oy + h, -ox : -ox + w] > 0
    return mask, int(np.count_nonzero(canvas))
