"""lcdata: COCO person keypoints -> augmentation-aligned crops, OpenPose targets, teacher
caches and label-corrected training stores (Zarr v3).

This package never imports `trainer`; a teacher reaches it as an exported model file.
"""

from lcdata.errors import LcposeError

__all__ = ["LcposeError"]
__version__ = "0.1.0"
