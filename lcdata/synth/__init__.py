"""The synthetic COCO-format benchmark: persons whose labels carry the paper's four failures,
with the clean truth kept.

    pose     kinematic stick figures -> 17 COCO keypoints
    draw     backgrounds, appearance, figures and their silhouettes
    scene    scenes, the label failures and the COCO files (`lcdata synth`)
    truth    clean and noisy labels paired; which failure removed each keypoint
    figure   the docs picture (`lcdata synth-figure`)
"""
