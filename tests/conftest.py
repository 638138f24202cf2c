"""Shared fixtures: the skeleton, render configs and the real COCO-MINI data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lcdata.config import SYNTH_RENDER, RenderConfig
from lcdata.labels.skeleton import CMU_SKELETON, Skeleton

COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"


@pytest.fixture
def skeleton() -> Skeleton:
    return CMU_SKELETON


@pytest.fixture
def render_cfg() -> RenderConfig:
    return RenderConfig()


@pytest.fixture
def synth_cfg() -> RenderConfig:
    return SYNTH_RENDER


@pytest.fixture
def coco_mini() -> Path:
    """Root of ../shared/data/coco-mini; skips when absent, fails if LC_REQUIRE_SHARED_DATA=1."""
    if not (COCO_MINI / "annotations").is_dir():
        message = f"COCO-MINI not found at {COCO_MINI}"
        if os.environ.get("LC_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message + " and LC_REQUIRE_SHARED_DATA=1")
        pytest.skip(message)
    return COCO_MINI
