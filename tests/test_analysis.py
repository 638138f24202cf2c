"""The report's statistics on fixed inputs: the levelling-off check and the rank correlation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from experiments.analysis import levelling, rank_correlation


def test_a_flat_tail_is_levelled_off_and_a_rising_one_is_not():
    flat = {2000: 30.0, 8000: 44.0, 12000: 47.3, 16000: 47.5}
    rising = {2000: 30.0, 8000: 38.0, 12000: 42.0, 16000: 45.0}
    check = levelling([flat])
    # 80% of 16,000 is 12,800: the last point at or before it is 12,000
    assert (check.start, check.end, check.seeds) == (12000, 16000, 1)
    assert check.gain == pytest.approx(0.2) and check.levelled
    assert not levelling([rising]).levelled
    # the mean over seeds decides: +0.2 and +3.0 average to +1.6
    both = levelling([flat, rising])
    assert both.gain == pytest.approx(1.6) and not both.levelled and both.seeds == 2


def test_levelling_needs_a_point_in_the_tail_and_one_before_it():
    assert levelling([]) is None and levelling([{}]) is None
    assert levelling([{16000: 40.0}]) is None
    # a seed without the start point does not enter the mean
    check = levelling([{12000: 40.0, 16000: 40.5}, {16000: 50.0}])
    assert check.seeds == 1 and check.gain == pytest.approx(0.5)


def test_rank_correlation_on_a_fixed_input():
    # ranks of y with a tie: 1, 2, 3.5, 5, 3.5 -> rho = 8 / sqrt(10 * 9.5)
    got = rank_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])
    assert got.rho == pytest.approx(8 / math.sqrt(95)) and got.n == 5
    assert rank_correlation([1, 2, 3], [3, 2, 1]).rho == pytest.approx(-1.0)
    # a perfect order of 5 pairs: 2 of the 120 pairings are as extreme (exact, two-sided)
    assert rank_correlation([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]).p_value == pytest.approx(2 / 120)
    # above EXACT_PAIRS the t approximation: near 0 for a perfect order of 20
    assert rank_correlation(list(range(20)), list(range(20))).p_value < 1e-6
    assert rank_correlation([1, 2], [1, 2]) is None  # too few pairs
    assert rank_correlation([1, 2, 3], [4, 4, 4]) is None  # constant: undefined
    with pytest.raises(ValueError, match="3 x values against 2"):
        rank_correlation([1, 2, 3], [1, 2])


def test_report_correlates_label_quality_with_student_ap(tmp_path):
    """The report's correlation section on fixed markers: the ranks agree on seed 0 and
    swap Baseline and LC on seed 1."""
    from experiments.config import QUICK_CONFIG, load_config
    from experiments.report import Runs, quality_pairs, quality_section

    cfg = load_config(QUICK_CONFIG.parent / "aug_fresh.toml")
    numbers = {  # (label-quality AP, student AP) per data set and row
        "p0.10_q0.10_s0": {"baseline": (0.53, 0.47), "lc": (0.73, 0.48), "clean": (0.92, 0.55)},
        "p0.10_q0.10_s1": {"baseline": (0.54, 0.48), "lc": (0.72, 0.47), "clean": (0.93, 0.56)},
    }
    markers = {}
    for group, rows in numbers.items():
        for method, (quality, student) in rows.items():
            markers[f"{group}/quality/{method}"] = {"outputs": {"metrics": {"AP": quality}}}
            markers[f"{group}/eval/{method}"] = {"outputs": {"metrics": {"clean": {"AP": student}}}}
    runs = Runs(out=tmp_path, cfg=cfg, markers=markers)
    pairs = quality_pairs(runs)
    assert len(pairs) == 6 and {p["method"] for p in pairs} == {"baseline", "lc", "clean"}
    text = "\n".join(quality_section(runs, tmp_path))
    # x ranks 1 4 5 2 3 6, y ranks 1.5 3.5 5 3.5 1.5 6 -> rho = 14.5 / sqrt(17.5 * 16.5)
    rho = 14.5 / math.sqrt(17.5 * 16.5)
    assert f"over all 6 target stores: ρ = {rho:+.2f}" in text
    assert "mean ρ = +0.75" in text  # seed 0: +1.0, seed 1: +0.5
    assert "| LC | 0.10 | 2 | 72.5 ± 0.7 | 47.5 ± 0.7 |" in text
    assert (tmp_path / "results_quality.png").stat().st_size > 1000


def test_report_sets_the_short_regime_beside_this_experiment(tmp_path):
    from dataclasses import replace

    from experiments.config import QUICK_CONFIG, load_config
    from experiments.report import Runs, comparison_section

    cfg = load_config(QUICK_CONFIG.parent / "aug_fresh.toml")
    markers = {}
    for seed, (base, lc) in enumerate(((0.47, 0.49), (0.48, 0.49))):
        for method, ap in (("baseline", base), ("lc", lc)):
            markers[f"p0.10_q0.10_s{seed}/eval/{method}"] = {
                "outputs": {"metrics": {"clean": {"AP": ap}}}
            }
    text = "\n".join(comparison_section(Runs(out=tmp_path, cfg=cfg, markers=markers)))
    assert "## The short regime, for comparison" in text and "1,200 steps of batch 16" in text
    assert (
        "| LC | 3 | 29.1 ± 0.6 | +0.7 ± 0.3 (gain) | 2 | 49.0 ± 0.0 | +1.5 ± 0.7 (gain) |" in text
    )
    missing = replace(cfg, compare_with="no/such.json")
    assert "not in this checkout" in comparison_section(Runs(tmp_path, missing, markers))[0]


def test_discussion_says_whether_a_gain_grew_with_the_schedule(tmp_path):
    """Unpaired across experiments: a change counts beyond 2 x the combined std."""
    from experiments.config import QUICK_CONFIG, load_config
    from experiments.report import Runs, Stat, growth_text, schedule_bullet

    assert growth_text((0.7, 0.3, 3), Stat((2.0, 2.2, 2.4))) == (
        "+0.7 -> +2.2 AP (+1.5): grew (threshold 0.7)"
    )
    assert growth_text((0.7, 0.3, 3), Stat((-1.0, -0.8, -0.9))).endswith("shrank (threshold 0.6)")
    assert "no clear change" in growth_text((0.7, 0.3, 3), Stat((0.0, 2.0, 1.0)))
    assert growth_text((2.5, None, 1), Stat((3.0, 4.0))).endswith("one seed on a side, no claim")

    cfg = load_config(QUICK_CONFIG.parent / "aug_fresh.toml")
    markers = {}
    for seed, (base, lc) in enumerate(((0.47, 0.49), (0.48, 0.50), (0.46, 0.485))):
        for method, ap in (("baseline", base), ("lc", lc)):
            markers[f"p0.10_q0.10_s{seed}/eval/{method}"] = {
                "outputs": {"metrics": {"clean": {"AP": ap}}}
            }
    text = schedule_bullet(Runs(out=tmp_path, cfg=cfg, markers=markers))
    # short regime: LC +0.7 ± 0.3 (3 seeds); here +2.0, +2.0, +2.5 -> +2.2 ± 0.3
    assert text is not None and "1,200 steps" in text
    assert "LC +0.7 -> +2.2 AP (+1.5): grew (threshold 0.8)" in text
    assert "KD" not in text  # no KD student here, so no KD line


def test_headline_has_the_three_numbers_from_paired_seeds(tmp_path):
    """LC vs Baseline, the best correction vs LC and the cost at p = q = 0, each a paired
    difference over the seeds that have both rows; the best correction is the one with the
    highest mean AP at the main level."""
    from experiments.config import load_config
    from experiments.report import Runs, headline, headline_section

    cfg = load_config(Path(__file__).parents[1] / "experiments" / "aug_k8.toml")
    aps = {  # student AP x 1/100 per data set and row
        "p0.10_q0.10_s0": {"baseline": 0.50, "lc": 0.53, "lc_ttaz": 0.54, "kp_tta": 0.52},
        "p0.10_q0.10_s1": {"baseline": 0.51, "lc": 0.53, "lc_ttaz": 0.55},
        "p0.10_q0.10_s2": {"baseline": 0.52, "lc": 0.55, "kp_tta": 0.60},
        "p0.00_q0.00_s0": {"baseline": 0.60, "lc": 0.59, "lc_ttaz": 0.61},
        "p0.00_q0.00_s1": {"baseline": 0.63, "lc": 0.60},
    }
    markers = {
        f"{group}/eval/{method}": {"outputs": {"metrics": {"clean": {"AP": ap}}}}
        for group, rows in aps.items()
        for method, ap in rows.items()
    }
    h = headline(Runs(out=tmp_path, cfg=cfg, markers=markers))
    assert h.main_level == pytest.approx(0.1)
    assert h.lc_vs_baseline.values == pytest.approx((3.0, 2.0, 3.0))
    # mean AP: kp_tta (52 + 60) / 2 = 56 beats lc_ttaz (54 + 55) / 2 = 54.5
    assert h.best == "kp_tta" and h.best_vs_lc.values == pytest.approx((-1.0, 5.0))
    assert h.zero_lc.values == pytest.approx((-1.0, -3.0))
    assert h.zero_best.n == 0  # kp_tta has no run at p = q = 0
    text = "\n".join(headline_section(Runs(out=tmp_path, cfg=cfg, markers=markers)))
    assert "**LC vs Baseline** (p = q = 0.10): +2.7 ± 0.6 AP (gain, 3 seed(s))" in text
    assert "+2.0 ± 4.2 AP (no clear difference, 2 seed(s))" in text
    assert "(LC vs Baseline at p = q = 0): -2.0 ± 1.4 AP (no clear difference" in text
    empty = headline_section(Runs(out=tmp_path, cfg=cfg, markers={}))
    assert "not measured yet" in "\n".join(empty)


def test_report_names_each_trainings_precision(tmp_path):
    """A fit's precision comes from its marker's amp_history, else the config's train.amp
    (markers written before amp_history existed); a switch mid-fit is spelled out."""
    from experiments.config import load_config
    from experiments.report import Runs, fit_precisions, setup_section

    cfg = load_config(Path(__file__).parents[1] / "experiments" / "aug_k8.toml")  # amp bf16
    switched = [{"from_step": 0, "amp": "bf16"}, {"from_step": 3000, "amp": "off"}]
    markers = {
        "p0.10_q0.10_s0/fit/baseline": {"kind": "fit", "seconds": 1.0, "outputs": {}},
        "p0.10_q0.10_s1/fit/baseline": {
            "kind": "fit", "seconds": 1.0, "outputs": {"amp_history": switched}
        },
        "p0.10_q0.10_s0/fit/lc": {
            "kind": "fit", "seconds": 1.0,
            "outputs": {"amp_history": [{"from_step": 0, "amp": "off"}]},
        },
        "p0.10_q0.10_s0/data": {"kind": "data", "seconds": 1.0, "outputs": {}},
    }  # fmt: skip
    runs = Runs(out=tmp_path, cfg=cfg, markers=markers)
    assert fit_precisions(runs) == {
        "bf16": ["p0.10_q0.10_s0 baseline"],
        "fp32": ["p0.10_q0.10_s0 lc"],
        "bf16 to step 3,000, then fp32": ["p0.10_q0.10_s1 baseline"],
    }
    text = "\n".join(setup_section(runs))
    assert "**Precision** differs between trainings" in text
    assert "fp32 for p0.10_q0.10_s0 lc" in text
    same = {k: v for k, v in markers.items() if not k.endswith("baseline")}
    assert "every training in fp32" in "\n".join(setup_section(Runs(tmp_path, cfg, same)))


def test_a_row_keeps_the_precision_of_the_training_it_scored_and_its_retrain_is_checked(
    tmp_path,
):
    """LC trained again in bf16 as the x2 teacher (its weights were lost) after its row was
    evaluated in fp32: the row is listed under fp32, the retraining under bf16 as 'again',
    both count in Compute, and the x2 teacher's evaluation is set against the row (where the
    weights were kept, it is the same training: a check of the export)."""
    from experiments.config import load_config
    from experiments.report import Runs, fit_precisions, setup_section, teacher_check_text

    cfg = load_config(Path(__file__).parents[1] / "experiments" / "aug_k8.toml")

    def fit(amp: str, finished: str, **extra) -> dict:
        history = [{"from_step": 0, "amp": amp}]
        return {"kind": "fit", "seconds": 3600.0, "finished": finished, **extra,
                "outputs": {"amp_history": history, "step_s": 0.2}}  # fmt: skip

    def ev(ap: float, finished: str) -> dict:
        return {"kind": "evaluate", "seconds": 0.0, "finished": finished,
                "outputs": {"metrics": {"clean": {"AP": ap}}}}  # fmt: skip

    first = fit("off", "2026-12-01 10:00:00")
    markers = {
        "p0.10_q0.10_s0/fit/lc": fit("bf16", "2026-12-08 10:00:00", replaced=first),
        "p0.10_q0.10_s0/eval/lc": ev(0.532, "2026-12-01 10:05:00"),
        "p0.10_q0.10_s0/eval/lc_teacher": ev(0.541, "2026-12-08 10:05:00"),
        "p0.10_q0.10_s2/fit/lc": fit("off", "2026-12-02 10:00:00"),
        "p0.10_q0.10_s2/eval/lc": ev(0.525, "2026-12-02 10:05:00"),
        "p0.10_q0.10_s2/eval/lc_teacher": ev(0.525, "2026-12-08 11:05:00"),
    }
    runs = Runs(out=tmp_path, cfg=cfg, markers=markers)
    assert fit_precisions(runs) == {
        "fp32": ["p0.10_q0.10_s0 lc", "p0.10_q0.10_s2 lc"],
        "bf16": ["p0.10_q0.10_s0 lc again"],
    }
    text = teacher_check_text(runs)
    again = "seed 0, LC trained again in bf16 as the x2 teacher (its weights were lost)"
    assert f"{again}: 54.1 against 53.2 (fp32), +0.9" in text
    assert "seed 2, LC exported as the x2 teacher: 52.5 against 52.5, the same training" in text
    setup = "\n".join(setup_section(runs))
    assert text in setup and "3 trainings, 3.00 h of step time" in setup
    # a training that ran again before its row's evaluation: the row scored the new one
    markers["p0.10_q0.10_s0/eval/lc"] = ev(0.532, "2026-12-08 10:05:00")
    assert fit_precisions(Runs(out=tmp_path, cfg=cfg, markers=markers)) == {
        "bf16": ["p0.10_q0.10_s0 lc"], "fp32": ["p0.10_q0.10_s2 lc"]
    }  # fmt: skip


def test_precision_check_retrains_the_baseline_in_its_precision_and_reports_the_change(
    tmp_path,
):
    """protocol.precision_check: a second Baseline fit on the chosen seeds, forced into that
    precision (the fit's args), and the report's Precision line gives the per-seed change."""
    from dataclasses import replace

    from experiments.config import load_config
    from experiments.plan import plan
    from experiments.report import Runs, precision_check_text

    cfg = load_config(Path(__file__).parents[1] / "experiments" / "aug_k8.toml")
    cfg = replace(cfg, protocol=replace(cfg.protocol, precision_check="off",
                                        precision_check_seeds=(0,)))  # fmt: skip
    steps = {s.name: s for s in plan(cfg)}
    check = steps["p0.10_q0.10_s0/fit/baseline_amp"]
    assert check.args["amp"] == "off" and check.args["store"] == "p0.10_q0.10_s0/gt.zarr"
    assert check.args["target"] == "gt" and "p0.10_q0.10_s1/fit/baseline_amp" not in steps
    assert "amp" not in steps["p0.10_q0.10_s0/fit/baseline"].args
    # it runs after the main rows (the clean bound) and before the p = q = 0 rows
    ranks = {n: s.rank for n, s in steps.items() if s.kind == "fit"}
    assert ranks["p0.10_q0.10_s2/fit/clean"] < ranks["p0.10_q0.10_s0/fit/baseline_amp"]
    assert ranks["p0.10_q0.10_s0/fit/baseline_amp"] < ranks["p0.00_q0.00_s0/fit/baseline"]
    markers = {
        f"p0.10_q0.10_s{seed}/eval/{method}": {"outputs": {"metrics": {"clean": {"AP": ap}}}}
        for seed, method, ap in ((0, "baseline", 0.504), (1, "baseline", 0.519),
                                 (0, "baseline_amp", 0.512))
    }  # fmt: skip
    runs = Runs(out=tmp_path, cfg=cfg, markers=markers)
    assert "has not finished yet" in precision_check_text(runs)
    markers["p0.10_q0.10_s0/fit/baseline"] = {"kind": "fit", "outputs": {}}
    text = precision_check_text(Runs(out=tmp_path, cfg=cfg, markers=markers))
    assert "seed 0: 51.2 in fp32 against 50.4 (bf16), +0.8" in text
    assert "seed spread: 1.1 std" in text


def test_probe_trend_tells_a_flat_end_from_fitting_the_defects():
    from experiments.report import _probe_trend

    assert _probe_trend(126.0, 126.0, at_end=True) == "(still falling)."
    assert "flat, no sign of fitting" in _probe_trend(126.0, 126.4, at_end=False)
    assert _probe_trend(100.0, 110.0, at_end=False).startswith("(+10 since: it fits")


def test_corrections_table_scores_labels_over_the_seeds_whose_student_finished(tmp_path):
    """A store is scored long before its student ends: the label-quality AP of a row is the
    mean over the same seeds as the student AP beside it, not over every scored store."""
    from experiments.config import load_config
    from experiments.report import Runs, corrections_section

    cfg = load_config(Path(__file__).parents[1] / "experiments" / "aug_k8.toml")
    markers = {}
    for seed, (base, lc, q_lc) in enumerate(((0.50, 0.53, 0.70), (0.52, 0.54, 0.72))):
        group = f"p0.10_q0.10_s{seed}"
        for method, ap in (("baseline", base), ("lc", lc), ("lc_ttaz", lc + 0.01)):
            markers[f"{group}/eval/{method}"] = {"outputs": {"metrics": {"clean": {"AP": ap}}}}
        markers[f"{group}/quality/lc"] = {"outputs": {"metrics": {"AP": q_lc}}}
    # seed 2: its LC store is scored, its student still trains
    markers["p0.10_q0.10_s2/quality/lc"] = {"outputs": {"metrics": {"AP": 0.99}}}
    text = "\n".join(corrections_section(Runs(out=tmp_path, cfg=cfg, markers=markers)))
    assert "| 0.10 | LC | 2 | 53.5 ± 0.7 | +2.5 ± 0.7 (gain) |  | 71.0 ± 1.4 |" in text
    assert "+1.0 ± 0.0 (gain)" in text  # LC-TTA vs LC, paired per seed


def test_discussion_gives_the_share_of_the_clean_bound_gap_each_correction_closes(tmp_path):
    """Mean gain (y - b) over mean gap (c - b) on the seeds with the bound and the method."""
    from experiments.config import QUICK_CONFIG, load_config
    from experiments.report import Runs, discussion_section

    cfg = load_config(QUICK_CONFIG.parent / "aug_k8.toml")
    aps = {  # seed: {method: AP}
        0: {"baseline": 0.50, "clean": 0.55, "lc": 0.53, "kp_tta": 0.54, "lc_ttaz": 0.52},
        1: {"baseline": 0.52, "clean": 0.54, "lc": 0.53, "kp_tta": 0.546},
        2: {"baseline": 0.51, "lc": 0.60, "kp_tta": 0.60},  # no bound on seed 2
    }
    markers = {
        f"p0.10_q0.10_s{seed}/eval/{method}": {"outputs": {"metrics": {"clean": {"AP": ap}}}}
        for seed, row in aps.items()
        for method, ap in row.items()
    }
    text = "\n".join(discussion_section(Runs(out=tmp_path, cfg=cfg, markers=markers)))
    assert "**Room to improve** (seed(s) 0, 1, where the clean bound was trained)" in text
    assert "+3.5 ± 2.1 AP over the Baseline" in text
    # gaps 5, 2 (mean 3.5); LC gains 3, 1 -> 2 / 3.5 = 57%; keypoints 4, 2.6 -> 3.3 / 3.5 =
    # 94%; flip+zoom only on seed 0: 2 / 5 = 40%
    assert "LC 57%;" in text
    assert "LC keypoints, flip-TTA teacher 94%" in text
    assert "LC, flip+zoom-TTA teacher 40% (1 seed(s))" in text


def test_discussion_states_the_goal_of_the_corrections_criterion_by_criterion(tmp_path):
    """Label quality above LC's (mean of per-seed differences), students above LC beyond
    2 std, not a loss against the Baseline at p = q = 0; open while a criterion is unmeasured."""
    from experiments.config import QUICK_CONFIG, load_config
    from experiments.report import Runs, goal_bullet

    cfg = load_config(QUICK_CONFIG.parent / "aug_k8.toml")
    aps = {  # group: {method: (student AP, label-quality AP)}
        "p0.10_q0.10_s0": {"lc": (0.53, 0.72), "lc_ttaz": (0.54, 0.74), "kp_tta": (0.540, 0.70)},
        "p0.10_q0.10_s1": {"lc": (0.53, 0.72), "lc_ttaz": (0.53, 0.73), "kp_tta": (0.538, 0.71)},
        "p0.10_q0.10_s2": {"lc": (0.52, 0.71), "lc_ttaz": (0.54, 0.73), "kp_tta": (0.529, 0.70)},
    }
    markers = {}
    for group, rows in aps.items():
        for method, (ap, quality) in rows.items():
            markers[f"{group}/eval/{method}"] = {"outputs": {"metrics": {"clean": {"AP": ap}}}}
            markers[f"{group}/quality/{method}"] = {"outputs": {"metrics": {"AP": quality}}}
    text = goal_bullet(Runs(out=tmp_path, cfg=cfg, markers=markers))
    assert text is not None
    # flip+zoom: quality +1.7 (met), students +1.0 ± 1.0 (not met) -> not reached whatever p = 0
    assert "label quality +1.7 ± 0.6 vs LC (met)" in text
    assert "students +1.0 ± 1.0 vs LC (no clear difference: not met)" in text
    # keypoints: students +0.9 ± 0.1 (met), quality -1.3 (not met)
    assert "label quality -1.3 ± 0.6 vs LC (not met), students +0.9 ± 0.1 vs LC (gain: met)" in (
        text
    )
    assert "at p = q = 0 vs Baseline not measured yet" in text  # no p = 0 rows
    assert ": no correction reaches it." in text
    # a correction that meets both measured criteria keeps the goal open until p = 0 is in
    for group in aps:
        markers[f"{group}/quality/kp_tta"]["outputs"]["metrics"]["AP"] = 0.75
    text = goal_bullet(Runs(out=tmp_path, cfg=cfg, markers=markers))
    assert ": not reached yet; open until the missing rows finish." in text
    for seed, (base, kp) in enumerate(((0.60, 0.61), (0.62, 0.615), (0.61, 0.612))):
        for method, ap in (("baseline", base), ("kp_tta", kp)):
            markers[f"p0.00_q0.00_s{seed}/eval/{method}"] = {
                "outputs": {"metrics": {"clean": {"AP": ap}}}
            }
    text = goal_bullet(Runs(out=tmp_path, cfg=cfg, markers=markers))
    assert "at p = q = 0 +0.2 ± 0.8 vs Baseline (no clear difference: met)" in text
    assert ": reached by LC keypoints, flip-TTA teacher." in text
    assert goal_bullet(Runs(out=tmp_path, cfg=cfg, markers={})) is None


def test_sweep_has_every_level_with_the_main_one_over_the_sweeps_seeds(tmp_path):
    """The sweep table takes the main level beside the sweep's own, each over the sweep's
    seeds, with LC's gain paired per seed; the Discussion's verdict at p = q = 0 follows it."""
    from experiments.config import QUICK_CONFIG, load_config
    from experiments.report import Runs, discussion_section, sweep_rows, sweep_section

    cfg = load_config(QUICK_CONFIG.parent / "aug_k8.toml")  # sweep: p = q = 0, seeds 0-2
    aps = {  # level: [(Baseline, LC) per seed]
        "p0.10_q0.10": [(0.50, 0.53), (0.52, 0.54), (0.51, 0.53)],
        "p0.00_q0.00": [(0.55, 0.54), (0.56, 0.545), (0.54, 0.53)],
    }
    markers = {
        f"{level}_s{seed}/eval/{method}": {"outputs": {"metrics": {"clean": {"AP": ap}}}}
        for level, pairs in aps.items()
        for seed, pair in enumerate(pairs)
        for method, ap in zip(("baseline", "lc"), pair, strict=True)
    }
    runs = Runs(out=tmp_path, cfg=cfg, markers=markers)
    rows = sweep_rows(runs)
    assert [(r["label"], r["seeds"]) for r in rows] == [("0.00", [0, 1, 2]), ("0.10", [0, 1, 2])]
    assert rows[0]["gain"].values == pytest.approx((-1.0, -1.5, -1.0))
    assert rows[1]["baseline"].mean == pytest.approx(51.0)
    table = "\n".join(sweep_section(runs, tmp_path))
    assert "| 0.00 | 0, 1, 2 | n/a | n/a | n/a | n/a | 55.0 ± 1.0 | 53.8 ± 0.8 |" in table
    assert "| -1.2 ± 0.3 (loss) |" in table
    assert "| +2.3 ± 0.6 (gain) |" in table
    text = "\n".join(discussion_section(runs))
    assert "**Sweep** (LC - Baseline AP by p = q, seeds 0, 1, 2): 0.00: -1.2 ± 0.3, " in text
    # the cost at p = q = 0 over seeds is said once, in its own bullet
    assert "ΔAP against the Baseline: LC -1.2 ± 0.3 (loss)." in text
    assert "LC costs" not in text
    assert (tmp_path / "results_sweep.png").stat().st_size > 1000
