"""The synthetic COCO-format benchmark with the paper's four label failures.

The clean truth is kept beside the corrupted labels.

    pose     kinematic stick figures -> 17 COCO keypoints
    draw     backgrounds, appearance, figures and their silhouettes
    scene    scenes, the label failures and the COCO files (`lcdata synth`)
    truth    clean and noisy labels paired; which failure removed each keypoint
    figure   the docs picture (`lcdata synth-figure`)
"""
