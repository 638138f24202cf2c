"""lcdata: COCO keypoints -> teacher caches -> label-corrected training stores (Zarr v3).

Sub-packages by stage (lower layers never import higher ones; import-linter checks it):

    errors, io, config, parallel   shared helpers and the recorded configurations
    labels       label math: skeleton, COCO, augmentation, grid, encoders and decoder
    store        the Zarr store: layout, codecs, references, locks, resume, inspection
    synth        the synthetic benchmark and its clean truth
    build        stage 1: GT store, teacher pass, one-pass build
    correction   stage 2: correction rules, corrected stores, analytics
    show         pictures of stored samples
    cli          the `lcdata` command line

This package never imports `trainer`; a teacher reaches it as an exported model file.
"""

from lcdata.errors import ConfigError, LcposeError

__all__ = ["ConfigError", "LcposeError"]
__version__ = "0.1.0"
