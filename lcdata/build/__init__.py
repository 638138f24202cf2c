"""Writing a cache store: the GT build, the teacher pass and the one-pass build of both.

gt          COCO images -> K augmented views -> crops, masks, GT maps (`build_gt_store`)
teacher     loading an exported teacher and checking it fits the store (`load_teacher`)
teacher_pass the teacher over a GT store's crops into teacher/* (`run_teacher_pass`)
one_pass    GT rendering in worker processes overlapped with inference (`build_teacher_cache`)
blocks      whole-block writes of GT and teacher arrays, each followed by its progress mark
"""
