"""Kinematic stick-figure model of the synthetic benchmark: sampled poses -> 17 COCO keypoints.

A figure is built in a 3-D body frame, turned about the vertical axis (yaw), projected
orthographically onto the image, rotated in the image plane (roll), scaled and placed.

Body frame (units of the standing height H, the floor-to-crown height of the figure):
    +x  the person's left, +y  down, +z  forward (out of the chest).
At yaw 0 the person faces the camera, so the person's left appears on the image's right,
as in a photograph of someone facing you. Yaw stays within +-`MAX_FACE_YAW_DEG` (body plus
head), so every figure shows its face: the facing direction is what tells left from right,
and it survives horizontal flips the way it does in real images (see docs/synthetic.md).

Segment lengths follow Drillis & Contini's proportions of the standing height (upper arm
0.186 H, forearm 0.146 H, thigh 0.245 H, shank 0.246 H), each jittered per person.
Joint angles (degrees) are sampled per pose class within anatomical ranges:
    shoulder abduction 0-175, shoulder flexion -40-120, elbow flexion 0-145,
    hip abduction 0-40, hip flexion -30-110, knee flexion 0-130.

Image coordinates are (x, y) pixels with pixel centres at integers (OpenCV's convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lcdata.labels.skeleton import COCO_PART_NAMES

KP = {name: i for i, name in enumerate(COCO_PART_NAMES)}
"""COCO keypoint name -> index among the 17."""

NUM_KEYPOINTS = len(COCO_PART_NAMES)

# Body proportions as fractions of the standing height H (Drillis & Contini 1966, rounded).
UPPER_ARM = 0.186
FOREARM = 0.146
THIGH = 0.245
SHANK = 0.246
TORSO = 0.30  # hip-joint midpoint to shoulder-joint midpoint
SHOULDER_HALF = 0.115
HIP_HALF = 0.08
NECK = 0.115  # shoulder midpoint to head centre
HEAD_RADIUS = 0.065
PROPORTION_JITTER = 0.08  # each segment length is multiplied by U(1 - j, 1 + j)

MAX_FACE_YAW_DEG = 60.0
"""Largest |body yaw + head yaw|: beyond it the far eye and ear would hide behind the head,
which the labels (v=2 unless another person covers the point) do not model."""

POSE_KINDS: tuple[str, ...] = ("standing", "walking", "sitting", "arms_raised", "free")
POSE_PROBS: tuple[float, ...] = (0.25, 0.25, 0.15, 0.2, 0.15)

# Face points relative to the head centre, in the head frame (units of H): (x, y, z).
_NOSE = np.array([0.0, 0.012, 0.06])
_EYE = np.array([0.027, -0.012, 0.05])  # left eye; the right eye mirrors x
_EAR = np.array([0.062, 0.0, -0.005])  # left ear


@dataclass(frozen=True)
class Figure:
    """One posed stick figure in image pixels.

    Attributes:
        keypoints_xy: (17, 2) float64 COCO keypoints, image pixels, rounded to 0.01 px.
        keypoint_depth: (17,) float64 distance towards the camera, pixels (larger = nearer).
        head_xy: (2,) head centre, image pixels; head_depth its depth.
        head_radius: pixels.
        hands_xy: (2, 2) centres of the left and right hand discs, image pixels.
        toes_xy: (2, 2) toe points of the left and right foot, image pixels.
        up_xy: (2,) unit vector of the head's "up" in the image, for drawing the hair.
        height: standing height H, pixels (the scale of the figure).
        kind: pose class, one of `POSE_KINDS`.
    """

    keypoints_xy: np.ndarray
    keypoint_depth: np.ndarray
    head_xy: np.ndarray
    head_depth: float
    head_radius: float
    hands_xy: np.ndarray
    toes_xy: np.ndarray
    up_xy: np.ndarray
    height: float
    kind: str

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of every drawn point, image pixels, not counting line widths."""
        pts = np.concatenate(
            [self.keypoints_xy, self.head_xy[None], self.hands_xy, self.toes_xy], axis=0
        )
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        r = self.head_radius
        return (
            min(x0, self.head_xy[0] - r),
            min(y0, self.head_xy[1] - r),
            max(x1, self.head_xy[0] + r),
            max(y1, self.head_xy[1] + r),
        )

    def translated(self, offset_xy: np.ndarray) -> Figure:
        """The same figure moved by `offset_xy` (2,) pixels; keypoints re-rounded to 0.01 px."""
        off = np.asarray(offset_xy, np.float64)
        return Figure(
            keypoints_xy=np.round(self.keypoints_xy + off, 2),
            keypoint_depth=self.keypoint_depth,
            head_xy=self.head_xy + off,
            head_depth=self.head_depth,
            head_radius=self.head_radius,
            hands_xy=self.hands_xy + off,
            toes_xy=self.toes_xy + off,
            up_xy=self.up_xy,
            height=self.height,
            kind=self.kind,
        )


def _rx(t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_axis(axis: np.ndarray, t: float) -> np.ndarray:
    """Rodrigues rotation by `t` radians about the unit vector `axis`."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


_DOWN = np.array([0.0, 1.0, 0.0])
_MIRROR_X = np.diag([-1.0, 1.0, 1.0])


def _arm_dirs(abd: float, flex: float, elbow: float, twist: float) -> tuple[np.ndarray, ...]:
    """Unit directions of the left upper arm and forearm in the torso frame (radians in).

    Abduction swings the arm out to the side (0 = hanging, pi = straight up), flexion
    swings it forward; elbow flexion turns the forearm about an axis that `twist` tilts
    from the sagittal (0: hand comes forward) towards outward (-pi/2) or inward (+pi/2).
    """
    frame = _rz(-abd) @ _rx(flex)
    upper = frame @ _DOWN
    axis = np.array([np.cos(twist), 0.0, np.sin(twist)])
    lower = frame @ _rot_axis(axis, elbow) @ _DOWN
    return upper, lower


def _leg_dirs(abd: float, flex: float, knee: float) -> tuple[np.ndarray, ...]:
    """Unit directions of the left thigh and shank in the pelvis frame (radians in).

    Hip flexion swings the thigh forward; knee flexion swings the shank back from it.
    """
    frame = _rz(-abd)
    return frame @ _rx(flex) @ _DOWN, frame @ _rx(flex - knee) @ _DOWN


def _u(rng: np.random.Generator, lo: float, hi: float, size: int | None = None):
    return np.deg2rad(rng.uniform(lo, hi, size))


def _sample_joint_angles(rng: np.random.Generator, kind: str) -> dict[str, np.ndarray]:
    """Joint angles (radians) of one pose class; each value is (2,) = (left, right)."""
    a: dict[str, np.ndarray] = {}
    legs_walk = kind == "walking" or (kind == "arms_raised" and rng.random() < 0.4)
    if kind == "sitting":
        a["hip_flex"] = _u(rng, 70, 105, 2)
        a["knee"] = _u(rng, 70, 115, 2)
        a["hip_abd"] = _u(rng, 3, 25, 2)
    elif legs_walk:
        swing = rng.uniform(-1, 1) * rng.uniform(15, 35)
        a["hip_flex"] = np.deg2rad(np.array([swing, -swing]) + rng.uniform(-5, 5, 2))
        a["knee"] = _u(rng, 3, 45, 2)
        a["hip_abd"] = _u(rng, 0, 8, 2)
    elif kind == "free":
        a["hip_flex"] = _u(rng, -30, 110, 2)
        a["knee"] = _u(rng, 0, 130, 2)
        a["hip_abd"] = _u(rng, 0, 40, 2)
    else:
        a["hip_flex"] = _u(rng, -5, 10, 2)
        a["knee"] = _u(rng, 0, 12, 2)
        a["hip_abd"] = _u(rng, 0, 12, 2)

    if kind == "walking":
        swing = -np.rad2deg(a["hip_flex"]) * rng.uniform(0.5, 1.0)
        a["sh_flex"] = np.deg2rad(swing + rng.uniform(-5, 5, 2))
        a["sh_abd"] = _u(rng, 4, 15, 2)
        a["elbow"] = _u(rng, 5, 60, 2)
        a["twist"] = _u(rng, -20, 30, 2)
    elif kind == "arms_raised":
        a["sh_abd"] = _u(rng, 60, 175, 2)
        a["sh_flex"] = _u(rng, -20, 60, 2)
        a["elbow"] = _u(rng, 0, 110, 2)
        a["twist"] = _u(rng, -90, 30, 2)
        if rng.random() < 0.4:  # one arm raised, the other hanging
            side = int(rng.integers(2))
            a["sh_abd"][side] = _u(rng, 3, 30)
            a["sh_flex"][side] = _u(rng, -10, 20)
            a["elbow"][side] = _u(rng, 0, 40)
    elif kind == "free":
        a["sh_abd"] = _u(rng, 0, 160, 2)
        a["sh_flex"] = _u(rng, -40, 120, 2)
        a["elbow"] = _u(rng, 0, 145, 2)
        a["twist"] = _u(rng, -90, 90, 2)
    elif kind == "sitting":
        a["sh_abd"] = _u(rng, 3, 30, 2)
        a["sh_flex"] = _u(rng, -5, 60, 2)
        a["elbow"] = _u(rng, 10, 100, 2)
        a["twist"] = _u(rng, -30, 60, 2)
    else:  # standing
        a["sh_abd"] = _u(rng, 3, 28, 2)
        a["sh_flex"] = _u(rng, -15, 20, 2)
        a["elbow"] = _u(rng, 0, 40, 2)
        a["twist"] = _u(rng, -30, 30, 2)
    return a


def sample_figure(
    rng: np.random.Generator,
    height: float,
    center_xy: tuple[float, float],
    *,
    kind: str | None = None,
    max_roll_deg: float = 60.0,
) -> Figure:
    """Sample a posed figure of standing height `height` px, its bounds centred at `center_xy`.

    Args:
        rng: the only source of randomness.
        height: standing height H in pixels (floor to crown when standing straight).
        center_xy: image pixels where the centre of the figure's bounds is placed.
        kind: pose class from `POSE_KINDS`; sampled with `POSE_PROBS` when None.
        max_roll_deg: in-plane rotation is Normal(0, 15 deg) clipped to this.

    Returns:
        The figure; keypoints are rounded to 0.01 px so that files and checks agree.
    """
    if kind is None:
        kind = POSE_KINDS[int(rng.choice(len(POSE_KINDS), p=POSE_PROBS))]
    j = rng.uniform(1 - PROPORTION_JITTER, 1 + PROPORTION_JITTER, 8)
    upper_arm, forearm, thigh, shank = UPPER_ARM * j[0], FOREARM * j[1], THIGH * j[2], SHANK * j[3]
    torso, sh_half, hip_half, neck = (
        TORSO * j[4],
        SHOULDER_HALF * j[5],
        HIP_HALF * j[6],
        NECK * j[7],
    )
    ang = _sample_joint_angles(rng, kind)

    lean = _u(rng, -8, 15) if kind != "sitting" else _u(rng, -15, 10)
    bend = _u(rng, -8, 8)
    twist = _u(rng, -15, 15)
    # _rx(t) turns "up" (0, -1, 0) towards -z, so -lean: positive lean tips the shoulders forward
    torso_rot = _rz(bend) @ _rx(-lean)
    shoulder_rot = torso_rot @ _ry(twist)
    body_yaw = _u(rng, -50, 50)
    # the face turns by body yaw + shoulder twist + head yaw; keep that within the limit
    face_limit = np.deg2rad(MAX_FACE_YAW_DEG)
    head_yaw = np.clip(
        _u(rng, -25, 25), -face_limit - body_yaw - twist, face_limit - body_yaw - twist
    )
    head_rot = shoulder_rot @ _ry(head_yaw) @ _rx(_u(rng, -15, 15)) @ _rz(_u(rng, -15, 15))

    pts = np.zeros((NUM_KEYPOINTS, 3))
    up = torso_rot @ -_DOWN
    sh_mid = torso * up
    sh_axis = shoulder_rot @ np.array([1.0, 0.0, 0.0])
    head = sh_mid + neck * (head_rot @ -_DOWN)
    hands, toes = np.zeros((2, 3)), np.zeros((2, 3))
    for s, side in enumerate(("left", "right")):
        mirror = np.eye(3) if side == "left" else _MIRROR_X
        sign = 1.0 if side == "left" else -1.0
        sh = sh_mid + sign * sh_half * sh_axis
        hip = np.array([sign * hip_half, 0.0, 0.0])
        ua, fa = _arm_dirs(ang["sh_abd"][s], ang["sh_flex"][s], ang["elbow"][s], ang["twist"][s])
        ua, fa = shoulder_rot @ mirror @ ua, shoulder_rot @ mirror @ fa
        th, sk = _leg_dirs(ang["hip_abd"][s], ang["hip_flex"][s], ang["knee"][s])
        th, sk = mirror @ th, mirror @ sk
        pts[KP[f"{side}_shoulder"]] = sh
        pts[KP[f"{side}_elbow"]] = sh + upper_arm * ua
        pts[KP[f"{side}_wrist"]] = pts[KP[f"{side}_elbow"]] + forearm * fa
        pts[KP[f"{side}_hip"]] = hip
        pts[KP[f"{side}_knee"]] = hip + thigh * th
        pts[KP[f"{side}_ankle"]] = pts[KP[f"{side}_knee"]] + shank * sk
        hands[s] = pts[KP[f"{side}_wrist"]] + 0.035 * fa
        # the foot points forward and a little down from the ankle, in the shank's frame
        toes[s] = pts[KP[f"{side}_ankle"]] + mirror @ _rz(-ang["hip_abd"][s]) @ np.array(
            [0.0, 0.03, 0.06]
        )
        pts[KP[f"{side}_eye"]] = head + head_rot @ mirror @ _EYE
        pts[KP[f"{side}_ear"]] = head + head_rot @ mirror @ _EAR
    pts[KP["nose"]] = head + head_rot @ _NOSE

    # yaw about the vertical, orthographic projection, roll in the image plane, scale
    yaw = _ry(body_yaw)
    roll = np.deg2rad(np.clip(rng.normal(0.0, 15.0), -max_roll_deg, max_roll_deg))
    c, s_ = np.cos(roll), np.sin(roll)
    plane = np.array([[c, -s_], [s_, c]]) * height

    def project(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = p @ yaw.T
        return q[..., :2] @ plane.T, q[..., 2] * height

    kp_xy, kp_depth = project(pts)
    head_xy, head_depth = project(head)
    hands_xy, _ = project(hands)
    toes_xy, _ = project(toes)
    up_xy = (project(head + head_rot @ -_DOWN)[0] - head_xy) / height
    fig = Figure(
        keypoints_xy=kp_xy,
        keypoint_depth=kp_depth,
        head_xy=head_xy,
        head_depth=float(head_depth),
        head_radius=HEAD_RADIUS * height,
        hands_xy=hands_xy,
        toes_xy=toes_xy,
        up_xy=up_xy / max(np.linalg.norm(up_xy), 1e-9),
        height=float(height),
        kind=kind,
    )
    x0, y0, x1, y1 = fig.bounds()
    return fig.translated(np.asarray(center_xy, np.float64) - [(x0 + x1) / 2, (y0 + y1) / 2])


def standing_nose_ankle() -> float:
    """Vertical nose-to-ankle distance of the unjittered upright figure, in units of H.

    Used to convert COCO's measured area / (nose-ankle distance)^2 into a factor on H^2.
    """
    ankle_y = THIGH + SHANK
    nose_y = -(TORSO + NECK) + _NOSE[1]
    return ankle_y - nose_y
