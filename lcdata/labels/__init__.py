"""Label math, no I/O beyond reading COCO files: the skeleton, COCO reading, augmentation, the
cell <-> pixel grid, the encoders (heatmaps, PAFs, masks) and their decoder, and COCO scoring.

    skeleton   parts, limbs, flips, the COCO mapping: the one channel layout
    coco       validated COCO person-keypoint reading, ignore masks, images
    augment    seeded views as affines; image, mask, keypoint and map warps; map flips
    grid       the cell <-> pixel formula, points inside an image
    render     keypoints -> heatmaps and PAFs; image masks -> grid masks (the encoder)
    decode     heatmaps and PAFs -> persons (the decoder)
    scoring    decoded persons -> COCO results and COCOeval numbers
"""
