"""Label math: skeleton, COCO, augmentation, the grid, encoders, decoder, scoring.

No I/O beyond reading COCO files and images.

    skeleton   parts, limbs, flips, the COCO mapping: the one channel layout
    coco       validated COCO person-keypoint reading, ignore masks, images
    augment    seeded views as affines; image, mask, keypoint and map warps; map flips
    grid       the cell <-> pixel formula, points inside an image
    render     keypoints -> heatmaps and PAFs; image masks -> grid masks (the encoder)
    decode     heatmaps and PAFs -> persons (the decoder)
    scoring    decoded persons -> COCO results and COCOeval numbers
"""
