"""Decoder speed: ms per image on COCO-MINI val and growth with the number of persons.

The same calls as `benchmarks/decode_speed.py` (the decoder's own benchmark, whose helpers
are reused): oracle maps rendered at the single-scale protocol (height 368, stride 8) for
every COCO-MINI val image with labelled persons, `lcdata.labels.decode.decode` alone timed per
image; then N template persons (100 px) on a jittered grid of a 736 x 736 input (92 x 92
cells), N = 1, 5, 20, 50, with the default config and with part sharing and fragment
merging off. Each timing repeats until a minimum time has passed and reports the median and
the fastest call (the fastest is the best estimate on a shared machine).
"""

from __future__ import annotations

import numpy as np

from benchmarks import Context, Result, Table
from lcdata.config import RenderConfig
from lcdata.labels.skeleton import CMU_SKELETON

NAME = "decode"
TITLE = "Decoding: ms per image and growth with the number of persons"
GOAL = "none (reported)"
PERSONS = (1, 5, 20, 50)


def run(ctx: Context) -> Result:
    from benchmarks.decode_speed import _time, synthetic
    from lcdata.labels.decode import DecodeConfig, decode
    from trainer.evaluate import oracle_maps, select_records
    from trainer.infer import model_geometry

    min_s = 0.3 if ctx.quick else 1.0
    sk, cfg = CMU_SKELETON, RenderConfig()
    tables = []
    coco_line = "COCO-MINI absent: skipped."
    if ctx.coco is not None:
        ann = ctx.coco / "annotations" / "person_keypoints_val2017.json"
        records = [r for r in select_records(ann, None) if len(r.keypoints)]
        maps = []
        for rec in records:
            geo = model_geometry((rec.height, rec.width), cfg.input_size, cfg.stride)
            maps.append(oracle_maps(rec.keypoints, geo, cfg=cfg, skeleton=sk))

        def decode_all() -> None:
            for heat, paf in maps:
                decode(heat, paf, skeleton=sk, stride=cfg.stride)

        med, best = _time(decode_all, min_s)
        n = len(records)
        persons = sum(len(r.keypoints) for r in records)
        cells = float(np.mean([h.shape[1] * h.shape[2] for h, _ in maps]))
        tables.append(
            Table(
                "COCO-MINI val, oracle maps at height 368, stride 8 (decode only)",
                ("images", "labelled persons", "mean cells", "median ms/image", "fastest ms/image"),
                [(n, persons, cells, 1e3 * med / n, 1e3 * best / n)],
            )
        )
        coco_line = (
            f"On COCO-MINI val ({n} images, {persons} labelled persons, ~{cells:.0f} cells per "
            f"map) decoding takes {1e3 * med / n:.1f} ms per image (median; fastest "
            f"{1e3 * best / n:.1f} ms)."
        )

    rng = np.random.default_rng(0)
    plain = DecodeConfig(share_parts=False, merge_fragments=0)
    crowd = Table(
        "N persons, 736 x 736 input (92 x 92 cells)",
        ("persons", "found", "median ms", "fastest ms", "fastest ms, no share/merge",
         "ms per person (fastest)"),
    )  # fmt: skip
    best_ms = {}
    for n in PERSONS:
        heat, paf = synthetic(n, rng)
        found = len(decode(heat, paf, skeleton=sk, stride=8))
        med, best = _time(lambda h=heat, p=paf: decode(h, p, skeleton=sk, stride=8), min_s)
        _, best_plain = _time(
            lambda h=heat, p=paf: decode(h, p, skeleton=sk, stride=8, cfg=plain), min_s
        )
        best_ms[n] = 1e3 * best
        crowd.rows.append((n, found, 1e3 * med, 1e3 * best, 1e3 * best_plain, 1e3 * best / n))
    tables.append(crowd)
    growth = best_ms[PERSONS[-1]] / best_ms[PERSONS[0]]
    slope = (best_ms[PERSONS[-1]] - best_ms[PERSONS[1]]) / (PERSONS[-1] - PERSONS[1])
    notes = (
        f"{coco_line} With N persons on a 92 x 92 grid the fastest decode takes "
        + ", ".join(f"{best_ms[n]:.1f} ms ({n})" for n in PERSONS)
        + f": {growth:.1f}x from 1 to {PERSONS[-1]} persons, about {slope:.2f} ms per added "
        f"person between {PERSONS[1]} and {PERSONS[-1]}, i.e. roughly linear in the number "
        f"of persons on top of a fixed cost for smoothing and peak finding over the whole "
        f"grid. The numbers come from the calls of `benchmarks/decode_speed.py` "
        f"(`docs/decoding.md` discusses them)."
    )
    return Result(
        NAME,
        TITLE,
        growth,
        f"decode time with {PERSONS[-1]} persons / with 1 person (fastest calls)",
        GOAL,
        None,
        tables,
        notes,
    )
