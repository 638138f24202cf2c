"""The experiment runner: --quick runs the whole protocol, is resumable, and writes the report.

The numbers of a 20-step run mean nothing; these tests check that every step ran, that a
re-run skips finished steps, that child processes run steps, and that the report has its
tables and figures.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from experiments.config import QUICK_CONFIG, load_config
from experiments.plan import Step, plan, select
from experiments.report import Stat, verdict
from experiments.run import main
from experiments.schedule import (
    drop_changed_markers,
    drop_stale_markers,
    marker_path,
    replaced_path,
)
from lcdata.config import SYNTH_RENDER
from lcdata.errors import LcposeError


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One --quick experiment with its report, shared by the tests below (~1 min)."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("experiment")
    out, docs = root / "out", root / "docs"
    result = CliRunner().invoke(main, ["--quick", "--out", str(out), "--report-dir", str(docs)])
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, docs, result.output


def test_quick_runs_every_step_of_the_plan(quick_run):
    out, _, output = quick_run
    steps = plan(load_config(QUICK_CONFIG))
    kinds = {s.kind for s in steps}
    assert kinds == {
        "synth", "gt_store", "oracle", "fit", "export", "teacher_pass", "coverage", "correct",
        "evaluate", "curve", "figures", "score_labels",
    }  # fmt: skip
    missing = [s.name for s in steps if not marker_path(out, s.name).is_file()]
    assert missing == []
    assert f"{len(steps)} steps run, 0 already done" in output
    # every evaluation scored the same predictions against the clean and the noisy labels
    body = json.loads(marker_path(out, "p0.10_q0.10_s0/eval/lc").read_text())
    assert set(body["outputs"]["metrics"]) == {"clean", "noisy"}
    # the LC x2 student trained on targets of the first LC student, in a second cache store
    x2 = json.loads(marker_path(out, "p0.10_q0.10_s0/teacher_pass/lc").read_text())
    assert x2["args"]["teacher"].endswith("models/lc.pt2")
    assert (out / "p0.10_q0.10_s0" / "cache_lc.zarr").is_dir()
    # learning curves: the runner kept the checkpoints of every checkpoint_every steps
    kept = sorted(p.name for p in (out / "p0.10_q0.10_s0/runs/lc/steps").glob("*.pt"))
    assert kept == ["step_0000010.pt", "step_0000020.pt"]
    # ... and each curve point has the checkpoint's losses on the clean probe
    curve = json.loads(marker_path(out, "p0.10_q0.10_s0/curve/lc").read_text())["outputs"]
    assert [p["step"] for p in curve["points"]] == [10, 20]
    for point in curve["points"]:
        assert set(point["probe"]) == {"loss_train", "loss_clean"}
        assert point["probe"]["loss_clean"] > 0
    cov = json.loads((out / "p0.10_q0.10_s0" / "coverage.json").read_text())
    assert cov["keypoints"]["labelled"]["n"] > 0 and cov["keypoints"]["all_missing"]["n"] > 0


def test_report_has_its_tables_and_figures(quick_run):
    _, docs, _ = quick_run
    text = (docs / "results.md").read_text()
    for heading in (
        "### Oracle AP of the validation labels",
        "### How much of the missing truth the teacher covers",
        "## Table 1 analogue",
        "## Table 2 analogue",
        "## Fig. 5 analogue",
        "## Defect sweep",
        "## Fig. 3 analogue",
        "## Discussion",
        "## The corrections beyond the paper",
        "## Does label-quality AP predict the student?",
        "### Loss against the clean truth during training",
    ):
        assert heading in text, heading
    assert "| 0.10 | LC gated | 1 |" in text and "| 0.00 | LC | 1 |" in text
    # 10 trained stores with a score; the 20-step students all score AP 0: no correlation
    assert "| clean labels (upper bound) | 0.10 | 1 |" in text
    assert "10 store(s) with both numbers: no rank correlation" in text
    assert "Levelling off" in text
    for row in ("| Baseline |", "| LC |", "| KD (λ=0.5) |", "| LC ×2 |", "| LC (both) |"):
        assert row in text, row
    assert "| clean labels (upper bound) |" in text
    assert "| 0.00 |" in text  # the sweep's p = q = 0 level
    for png in ("results_fig5_curves.png", "results_sweep.png", "results_fig3_1.png",
                "results_probe.png", "results_quality.png"):  # fmt: skip
        assert (docs / png).stat().st_size > 1000
        assert f"]({png})" in text


def test_rerun_skips_done_steps_and_children_run_the_rest(quick_run, tmp_path):
    out, _, _ = quick_run
    runner = CliRunner()
    again = runner.invoke(main, ["--quick", "--out", str(out), "--no-report"])
    assert again.exit_code == 0, again.output
    assert "0 steps run" in again.output
    # as after a kill: two evaluations lost their markers; two child processes redo them
    names = ["p0.10_q0.10_s0/eval/baseline", "p0.10_q0.10_s0/eval/lc"]
    for name in names:
        marker_path(out, name).unlink()
    args = ["--quick", "--out", str(out), "--no-report", "--parallel", "2"]
    redo = runner.invoke(main, [*args, "--only", "*/eval/baseline", "*/eval/lc"])
    assert redo.exit_code == 0, redo.output
    assert "2 steps run" in redo.output
    assert all(marker_path(out, n).is_file() for n in names)
    assert (out / "logs" / "p0.10_q0.10_s0__eval__lc.log").is_file()


def test_only_adds_unfinished_dependencies():
    steps = [
        Step("a", "synth"),
        Step("b", "gt_store", ("a",)),
        Step("c", "fit", ("b",)),
        Step("d", "fit", ("b",)),
    ]
    assert [s.name for s in select(steps, ["c"], done=set())] == ["a", "b", "c"]
    assert [s.name for s in select(steps, ["c"], done={"a", "b"})] == ["c"]
    assert [s.name for s in select(steps, ["?"], done={"a"})] == ["a", "b", "c", "d"]
    with pytest.raises(LcposeError, match="no step matches"):
        select(steps, ["e*"], done=set())


def test_markers_whose_outputs_are_gone_run_again_when_a_later_step_needs_them(tmp_path):
    # a group restored whole from its summaries, then given new rows: its markers say the
    # data, the GT store and the teacher pass are done, but none of their files is here
    steps = [
        Step("g/data", "synth", args={"dir": "g/data"}),
        Step("g/gt_store", "gt_store", ("g/data",), {"out": "g/gt.zarr"}),
        Step("g/fit/baseline", "fit", ("g/gt_store",), {"run": "g/runs/baseline"}),
        Step("g/export", "export", ("g/fit/baseline",), {"out": "g/models/baseline.pt2"}),
        Step("g/teacher_pass", "teacher_pass", ("g/export", "g/gt_store"), {"store": "g/gt.zarr"}),
        Step("g/coverage", "coverage", ("g/teacher_pass",)),
        Step("g/target/lc", "correct", ("g/teacher_pass",), {"out": "g/targets/lc.zarr"}),
    ]
    out = tmp_path / "out"
    for s in steps[:-1]:  # every step but the new row is done
        marker_path(out, s.name).parent.mkdir(parents=True, exist_ok=True)
        marker_path(out, s.name).write_text("{}")
    (out / "g/models").mkdir(parents=True)
    (out / "g/models/baseline.pt2").write_bytes(b"archived export")
    dropped = drop_stale_markers(out, steps)
    # the new row needs the teacher pass, which needs the store, which needs the data; the
    # training is not repeated (its export is here) and a marker-only step stays done
    assert sorted(dropped) == ["g/data", "g/gt_store", "g/teacher_pass"]
    left = {s.name for s in steps if marker_path(out, s.name).is_file()}
    assert left == {"g/fit/baseline", "g/export", "g/coverage"}
    # with its outputs back, nothing is dropped
    (out / "g/data/annotations").mkdir(parents=True)
    (out / "g/data/annotations/person_keypoints_train.json").write_text("{}")
    (out / "g/gt.zarr").mkdir()
    (out / "g/gt.zarr/zarr.json").write_text("{}")
    for name in dropped:
        marker_path(out, name).write_text("{}")
    assert drop_stale_markers(out, steps) == []
    # the GT store goes again and only a step that reads its labels is new: rebuilding the
    # store loses the teacher maps written into it, so its teacher pass runs again too
    marker_path(out, "g/target/lc").write_text("{}")
    (out / "g/targets/lc.zarr").mkdir(parents=True)
    (out / "g/targets/lc.zarr/zarr.json").write_text("{}")
    shutil.rmtree(out / "g/gt.zarr")
    steps.append(Step("g/quality/baseline", "score_labels", ("g/gt_store",)))
    assert sorted(drop_stale_markers(out, steps)) == ["g/gt_store", "g/teacher_pass"]
    assert marker_path(out, "g/target/lc").is_file()


def test_a_students_export_runs_with_it_and_a_lost_student_waits_for_its_consumer(tmp_path):
    """Only summaries and exported teachers are committed. An export runs right after its
    training (row 3's LC x2 needs LC's weights; exported at once, they are archived), and a
    training whose results are in but whose weights were lost (a fresh machine) runs again
    only at the rank of the row that needs it, after the rows still to train."""
    from experiments.schedule import run_plan

    steps = [
        Step("g/store", "gt_store", args={"out": "g/gt.zarr"}),
        Step("g/fit/lc", "fit", ("g/store",), {"run": "g/runs/lc"}, rank=1),
        Step("g/eval/lc", "evaluate", ("g/fit/lc",)),
        Step("g/fit/kd05", "fit", ("g/store",), {"run": "g/runs/kd05"}, rank=2),
        Step("g/eval/kd05", "evaluate", ("g/fit/kd05",)),
        Step("g/export/lc", "export", ("g/fit/lc",), {"out": "g/models/lc.pt2"}),
        Step("g/fit/lc_x2", "fit", ("g/export/lc", "g/store"), {"run": "g/runs/x2"}, rank=3),
    ]

    def order(done: list[str]) -> list[str]:
        out = tmp_path / str(len(done))
        for name in done:
            marker_path(out, name).parent.mkdir(parents=True, exist_ok=True)
            marker_path(out, name).write_text("{}")
        ran: list[str] = []

        def execute(step: Step) -> dict:
            ran.append(step.name)
            marker_path(out, step.name).write_text("{}")
            return {"seconds": 0.0}

        run_plan(out, steps, parallel=1, threads=1, execute=execute, echo=lambda _: None)
        return ran

    fits = ["g/fit/lc", "g/export/lc", "g/eval/lc", "g/fit/kd05", "g/eval/kd05", "g/fit/lc_x2"]
    assert order(["g/store"]) == fits
    # LC evaluated on an earlier machine, its weights gone: KD 0.5 trains first
    assert order(["g/store", "g/eval/lc"]) == [
        "g/fit/kd05", "g/eval/kd05", "g/fit/lc", "g/export/lc", "g/fit/lc_x2"
    ]  # fmt: skip


def test_a_training_run_again_for_its_lost_weights_keeps_the_first_ones_marker(
    tmp_path, monkeypatch
):
    """LC x2 needs LC's weights; where they were lost, LC trains again (perhaps in another
    precision) while its row keeps the first training's evaluation. The first marker waits in
    steps/replaced/ and the new marker keeps it as `replaced`, so the report can tell which
    training its row scored."""
    from experiments import steps as steps_mod

    steps = [
        Step("g/store", "gt_store", args={"out": "g/gt.zarr"}),
        Step("g/fit/lc", "fit", ("g/store",), {"run": "g/runs/lc"}, rank=1),
        Step("g/eval/lc", "evaluate", ("g/fit/lc",)),
        Step("g/export/lc", "export", ("g/fit/lc",), {"out": "g/models/lc.pt2"}),
    ]
    (tmp_path / "g" / "gt.zarr").mkdir(parents=True)
    (tmp_path / "g" / "gt.zarr" / "zarr.json").write_text("{}")
    first = {"step": "g/fit/lc", "kind": "fit", "seconds": 5.0, "finished": "2026-12-01 10:00:00",
             "outputs": {"amp_history": [{"from_step": 0, "amp": "off"}]}}  # fmt: skip
    (tmp_path / "steps").mkdir()
    for name, body in (("g/store", {}), ("g/fit/lc", first), ("g/eval/lc", {})):
        marker_path(tmp_path, name).write_text(json.dumps(body))
    assert drop_stale_markers(tmp_path, steps) == ["g/fit/lc"]
    assert not marker_path(tmp_path, "g/fit/lc").exists()
    assert json.loads(replaced_path(tmp_path, "g/fit/lc").read_text()) == first
    assert marker_path(tmp_path, "g/eval/lc").is_file()  # the row keeps its evaluation
    again = {"amp_history": [{"from_step": 0, "amp": "bf16"}]}
    monkeypatch.setitem(steps_mod.KINDS, "fit", lambda cfg, out, args: again)
    body = steps_mod.execute_step(load_config(QUICK_CONFIG), tmp_path, steps[1])
    assert body["outputs"] == again and body["replaced"] == first
    assert json.loads(marker_path(tmp_path, "g/fit/lc").read_text()) == body
    assert not replaced_path(tmp_path, "g/fit/lc").exists()
    # a plain training has no `replaced`
    marker_path(tmp_path, "g/fit/lc").unlink()
    assert "replaced" not in steps_mod.execute_step(load_config(QUICK_CONFIG), tmp_path, steps[1])


def test_markers_of_steps_whose_settings_changed_run_again_with_their_dependents(tmp_path):
    # the coverage step ran with 0 samples (another config); this config asks for 1024
    steps = [
        Step("g/gt_store", "gt_store", args={"out": "g/gt.zarr", "views": 8}),
        Step("g/coverage", "coverage", ("g/gt_store",), {"max_samples": 1024}),
        Step("g/quality/baseline", "score_labels", ("g/gt_store",), {"max_samples": 3000}),
        Step("g/fit/baseline", "fit", ("g/gt_store",), {"run": "g/runs/baseline"}),
        Step("g/report", "report", ("g/coverage",)),
    ]
    out = tmp_path / "out"
    (out / "steps").mkdir(parents=True)
    recorded = {"g/coverage": {"max_samples": 0}}
    for s in steps:
        marker_path(out, s.name).write_text(json.dumps({"args": recorded.get(s.name, s.args)}))
    assert drop_changed_markers(out, steps) == ["g/coverage", "g/report"]
    left = {s.name for s in steps if marker_path(out, s.name).is_file()}
    assert left == {"g/gt_store", "g/quality/baseline", "g/fit/baseline"}
    assert drop_changed_markers(out, steps) == []  # nothing else differs
    # a store built with other settings would drop the training on it: an error instead
    marker_path(out, "g/gt_store").write_text(json.dumps({"args": {"out": "g/gt.zarr"}}))
    with pytest.raises(
        LcposeError,
        match=r"g__fit__baseline.json: it trained on the output "
        r"of g/gt_store, whose arguments changed; .*delete this marker",
    ):
        drop_changed_markers(out, steps)
    assert marker_path(out, "g/gt_store").is_file()  # nothing removed before the error


def test_config_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'base = "{QUICK_CONFIG}"\n[store]\nsigmaa = 3\n')
    with pytest.raises(LcposeError, match=r"bad.toml: unknown key 'store.sigmaa'"):
        load_config(bad)
    bad.write_text(f'base = "{QUICK_CONFIG}"\n[protocol]\nmethods = ["lc", "xx"]\n')
    with pytest.raises(LcposeError, match="unknown student method 'xx'"):
        load_config(bad)
    bad.write_text(f'base = "{QUICK_CONFIG}"\n[protocol]\nmethods = ["kd05"]\n')
    with pytest.raises(LcposeError, match="'lc_x2' needs its teacher 'lc'"):
        load_config(bad)
    bad.write_text(f'base = "{QUICK_CONFIG}"\n[train]\nstepz = 3\n')
    with pytest.raises(LcposeError, match=r"\[train\].*stepz"):
        load_config(bad)


def test_quick_config_inherits_the_full_protocol():
    cfg = load_config(QUICK_CONFIG)
    assert cfg.store.render == SYNTH_RENDER  # the synth preset, named in lc_synth.toml
    assert cfg.train["model"] == "tiny" and cfg.train["lr"] == 1e-3  # from lc_synth
    assert cfg.train["steps"] == 20  # overridden
    assert cfg.seeds == (0,) and isinstance(cfg.protocol.methods, tuple)
    names = {s.name for s in plan(cfg)}
    # the sweep's level 0.1 is the main data set: shared, not duplicated
    assert "p0.00_q0.00_s0/fit/lc" in names and "p0.10_q0.10_s0/fit/lc" in names
    assert not any(n.startswith("p0.10_q0.10_s1") for n in names)


def test_experiment_v2_trains_every_row_on_its_seeds():
    """experiments/aug_k8.toml (experiment v2): trainings per row and seed, the learning
    curves with their clean probe, a label-quality score for every store that trains."""
    cfg = load_config(QUICK_CONFIG.parent / "aug_k8.toml")
    assert cfg.store.views_per_image == 8 and cfg.train.get("augment", "off") == "off"
    steps = plan(cfg)
    fits: dict[str, set[str]] = {}
    for s in steps:
        if s.kind == "fit":
            group, _, method = s.name.split("/")
            fits.setdefault(group, set()).add(method)
    main_rows = {"baseline", "kd05", "lc", "lc_ttaz", "kp_tta", "clean", "lc_x2"}
    clean_rows = {"baseline", "lc", "lc_ttaz", "kp_tta"}  # p = q = 0: its own teacher
    assert fits == {
        "p0.10_q0.10_s0": main_rows | {"baseline_amp"},  # the precision check, seed 0 only
        **{f"p0.10_q0.10_s{seed}": main_rows for seed in (1, 2)},
        **{f"p0.00_q0.00_s{seed}": clean_rows for seed in (0, 1, 2)},
    }
    assert sum(len(v) for v in fits.values()) == 34
    by_name = {s.name: s for s in steps}
    for seed in (0, 1, 2):
        group = f"p0.10_q0.10_s{seed}"
        for method in ("baseline", "kd05", "lc", "lc_ttaz", "kp_tta"):
            curve = by_name[f"{group}/curve/{method}"]
            assert curve.args["clean"].endswith("person_keypoints_train_clean.json")
            assert curve.args["store"] == by_name[f"{group}/fit/{method}"].args["store"]
        assert f"{group}/curve/clean" not in by_name  # curves of the rows that compete only
        # LC x2: the LC student is the next teacher
        assert by_name[f"{group}/teacher_pass/lc"].args["teacher"].endswith("models/lc.pt2")
    # every store a student trains on has its label-quality score beside it, and only those
    for group, methods in fits.items():
        for method in methods - {"baseline_amp"}:  # on the Baseline's store
            assert f"{group}/quality/{method}" in by_name, (group, method)
    assert not any(s.kind == "correct" and s.name.split("/")[-1] not in fits[s.name.split("/")[0]]
                   for s in steps)  # fmt: skip
    # the report's Fig. 3 and coverage table (settings that began as 0 in the K study)
    assert by_name["p0.10_q0.10_s0/figures"].args["n"] == 3
    assert by_name["p0.10_q0.10_s1/coverage"].args["max_samples"] == 1024
    # the TTA teachers are separate passes over copies of the GT store
    assert by_name["p0.10_q0.10_s0/teacher_pass/tta_flip"].args["tta"] == "flip"


def test_amp_override_reaches_every_fit_and_is_recorded(tmp_path, monkeypatch):
    """`experiments.run --amp off`: a fit step trains in that precision whatever the config
    says, allows a parked checkpoint of another precision to continue, and its marker keeps
    the run's amp_history."""
    import trainer.fit
    from experiments import steps as steps_mod

    cfg = load_config(QUICK_CONFIG)
    seen = {}

    def fake_fit(tc, store, run, **kw):
        seen.update(amp=tc.amp, allow=kw.get("allow_amp_change"), nhwc=tc.channels_last)
        run.mkdir(parents=True)
        history = [{"from_step": 0, "amp": "bf16"}, {"from_step": 3, "amp": tc.amp}]
        (run / "run.json").write_text(json.dumps({"amp_history": history}))
        return trainer.fit.FitResult(model=None, step=6, last_row=None, out_dir=run)

    monkeypatch.setattr(trainer.fit, "fit", fake_fit)
    args = {"seed": 0, "target": "gt", "run": "g/runs/baseline", "store": "g/gt.zarr"}
    monkeypatch.setenv(steps_mod.AMP_ENV, "off")
    marker = steps_mod.run_fit(replace(cfg, train={**cfg.train, "amp": "bf16"}), tmp_path, args)
    assert seen == {"amp": "off", "allow": True, "nhwc": False}
    assert marker["amp_history"][-1] == {"from_step": 3, "amp": "off"}
    assert marker["channels_last"] is False
    monkeypatch.delenv(steps_mod.AMP_ENV)
    shutil.rmtree(tmp_path / "g")
    steps_mod.run_fit(replace(cfg, train={**cfg.train, "amp": "bf16"}), tmp_path, args)
    assert seen == {"amp": "bf16", "allow": False, "nhwc": False}
    # `experiments.run --channels-last`: a speed path every fit takes, recorded in its marker
    monkeypatch.setenv(steps_mod.CHANNELS_LAST_ENV, "1")
    shutil.rmtree(tmp_path / "g")
    marker = steps_mod.run_fit(cfg, tmp_path, args)
    assert seen["nhwc"] is True and marker["channels_last"] is True
    monkeypatch.delenv(steps_mod.CHANNELS_LAST_ENV)
    # a row whose point is its precision (protocol.precision_check) keeps it under --amp
    monkeypatch.setenv(steps_mod.AMP_ENV, "bf16")
    shutil.rmtree(tmp_path / "g")
    steps_mod.run_fit(cfg, tmp_path, {**args, "amp": "off"})
    assert seen == {"amp": "off", "allow": False, "nhwc": False}


def test_an_unfinished_fit_that_cannot_continue_is_refused_before_any_step(tmp_path, monkeypatch):
    """A parked fp32 checkpoint under a bf16 config stops the runner at once, with the
    checkpoint and the --amp way out in one line, not after the store rebuilds ahead of it;
    under --amp it continues; a finished fit's checkpoint is not read."""
    from dataclasses import asdict

    import trainer.checkpoint
    from experiments import steps as steps_mod
    from experiments.config import train_config

    cfg = load_config(QUICK_CONFIG)
    cfg = replace(cfg, train={**cfg.train, "amp": "bf16"})
    args = {"seed": 0, "target": "target", "run": "g/runs/lc", "store": "g/lc.zarr"}
    fit = Step("g/fit/lc", "fit", ("g/target/lc",), args)
    other = Step("g/target/lc", "correct", (), {})
    saved = asdict(replace(train_config(cfg, seed=0, target="target"), amp="off"))
    monkeypatch.setattr(trainer.checkpoint, "load_training_checkpoint", lambda p: {"config": saved})
    steps_mod.check_unfinished_fits(cfg, tmp_path, [other, fit])  # no checkpoint yet
    (tmp_path / "g/runs/lc").mkdir(parents=True)
    (tmp_path / "g/runs/lc/checkpoint.pt").write_bytes(b"")
    with pytest.raises(LcposeError) as err:
        steps_mod.check_unfinished_fits(cfg, tmp_path, [other, fit])
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "g/runs/lc/checkpoint.pt") in message
    assert "amp='off'" in message and "--amp bf16" in message and "--amp off" in message
    monkeypatch.setenv(steps_mod.AMP_ENV, "bf16")  # experiments.run --amp bf16
    steps_mod.check_unfinished_fits(cfg, tmp_path, [other, fit])
    monkeypatch.setenv(steps_mod.AMP_ENV, "off")
    steps_mod.check_unfinished_fits(cfg, tmp_path, [other, fit])
    # another schedule cannot continue, whatever --amp says
    saved["steps"] = 999
    with pytest.raises(LcposeError, match="steps=999"):
        steps_mod.check_unfinished_fits(cfg, tmp_path, [fit])
    # a finished fit's checkpoint stays unread
    marker_path(tmp_path, fit.name).parent.mkdir(parents=True, exist_ok=True)
    marker_path(tmp_path, fit.name).write_text("{}")
    steps_mod.check_unfinished_fits(cfg, tmp_path, [fit])


def test_a_failed_child_holds_back_only_its_dependents(tmp_path, monkeypatch):
    """With child processes, a failed step's dependents are dropped, every other step still
    runs, and the run then raises, naming the failure and how many steps it held back."""
    from experiments import schedule

    launched: list[str] = []

    class FakeChild:  # `python -m experiments.run --exec STEP`, finished at once
        def __init__(self, cmd, **_):
            name = cmd[cmd.index("--exec") + 1]
            launched.append(name)
            self.returncode = 1 if name == "a/fit" else 0
            if self.returncode == 0:
                marker_path(tmp_path, name).parent.mkdir(parents=True, exist_ok=True)
                marker_path(tmp_path, name).write_text("{}")
            else:
                print("Error: boom", file=_["stdout"], flush=True)

        def poll(self):
            return self.returncode

    monkeypatch.setattr(schedule.subprocess, "Popen", FakeChild)
    steps = [
        Step("a/fit", "fit", rank=1),
        Step("a/eval", "evaluate", ("a/fit",), rank=1),
        Step("a/curve", "curve", ("a/eval",), rank=1),
        Step("b/fit", "fit", rank=2),
        Step("b/eval", "evaluate", ("b/fit",), rank=2),
    ]
    echoed: list[str] = []
    with pytest.raises(LcposeError) as err:
        schedule.run_plan(tmp_path, steps, parallel=2, threads=1, execute=None, echo=echoed.append)
    assert launched == ["a/fit", "b/fit", "b/eval"]
    assert marker_path(tmp_path, "b/eval").is_file()
    assert "a/fit: Error: boom" in str(err.value) and "2 step(s)" in str(err.value)
    assert any(line.startswith("[FAILED] a/fit") for line in echoed)


def test_trainings_run_row_by_row_in_the_configs_order(tmp_path):
    """Experiment v2 cut short has whole rows: the teachers, then each student row on every
    seed in the order of `protocol.methods`, the clean bound, the sweep, the iterations."""
    from experiments.schedule import run_plan

    steps = plan(load_config(QUICK_CONFIG.parent / "aug_fresh.toml"))
    fits: list[str] = []
    order: list[str] = []

    def execute(step: Step) -> dict:
        order.append(step.name)
        if step.kind == "fit":
            fits.append(step.name)
        marker_path(tmp_path, step.name).parent.mkdir(exist_ok=True)
        marker_path(tmp_path, step.name).write_text(json.dumps({"seconds": 0}))
        return {"seconds": 0.0}

    run_plan(tmp_path, steps, parallel=1, threads=1, execute=execute, echo=lambda _: None)
    rows = [f.split("/", 1)[1] for f in fits]
    main = [f"fit/{m}" for m in ("baseline", "lc", "lc_ttaz", "kp_tta", "kd05", "clean")]
    assert rows[:18] == [m for m in main for _ in range(3)]
    assert all(f.startswith(f"p0.10_q0.10_s{i % 3}/") for i, f in enumerate(fits[:18]))
    assert fits[18:30] == [
        f"p0.00_q0.00_s{s}/fit/{m}"
        for m in ("baseline", "lc", "lc_ttaz", "kp_tta")
        for s in (0, 1, 2)
    ]
    assert fits[30:] == [f"p0.10_q0.10_s{s}/fit/lc_x2" for s in (0, 1, 2)]
    # an evaluation follows its training before the next training starts
    first = order.index("p0.10_q0.10_s0/fit/baseline")
    assert order.index("p0.10_q0.10_s0/eval/baseline") < order.index("p0.10_q0.10_s1/fit/baseline")
    # (and so does its export, whose model file the archive keeps)
    assert set(order[first + 1 : first + 4]) == {"p0.10_q0.10_s0/eval/baseline",
                                                 "p0.10_q0.10_s0/curve/baseline",
                                                 "p0.10_q0.10_s0/export/baseline"}  # fmt: skip
    assert len(fits) == 33


def test_verdict_needs_two_standard_deviations():
    assert verdict(Stat((1.0, 1.2, 0.8))) == "gain"
    assert verdict(Stat((1.0, -0.5, 2.0))) == "no clear difference"
    assert verdict(Stat((-2.0, -2.1, -1.9))) == "loss"
    assert verdict(Stat((3.0,))) == "single seed, no claim"


def test_archived_groups_restore_on_a_fresh_machine(quick_run, tmp_path):
    from experiments.archive import archive, restore
    from experiments.report import write_report

    out, docs, _ = quick_run
    steps = plan(load_config(QUICK_CONFIG))
    results = tmp_path / "results"
    groups = archive(out, steps, results)
    assert groups and archive(out, steps, results) == []  # nothing new the second time
    group = groups[0]
    assert (results / group / "runs" / "baseline" / "log.csv").is_file()
    size = sum(p.stat().st_size for p in results.rglob("*") if p.is_file())
    assert size < 10_000_000  # summaries and exported teachers, not stores or checkpoints
    # a fresh machine: OUT is gone; the restored markers make every archived step done
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy2(out / "experiment.json", fresh / "experiment.json")
    assert sorted(restore(fresh, steps, results)) == sorted(groups)
    for s in steps:
        if s.name.split("/", 1)[0] in groups:
            assert marker_path(fresh, s.name).is_file(), s.name
    report = write_report(fresh, tmp_path / "docs")
    # against a report of OUT written now: other tests of this module rerun steps in OUT,
    # which rewrites their markers' timings (the report's step hours)
    now = write_report(out, tmp_path / "docs_now")

    # the two reports may be written a minute apart: their "written at" stamps are not content
    def unstamped(text: str) -> str:
        return re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "<time>", text)

    assert unstamped(report.read_text()) == unstamped(now.read_text().replace(str(out), str(fresh)))
    # a group whose plan grew by a row that needs the teacher's cache store: the stores are
    # rebuilt, the teacher's training is not (its exported model was archived)
    grown = [*steps, Step(f"{group}/target/new", "correct", (f"{group}/teacher_pass",))]
    again = tmp_path / "again"
    again.mkdir()
    assert group in restore(again, grown, results)
    done = {s.name for s in grown if marker_path(again, s.name).is_file()}
    for rerun in ("data", "gt_store", "teacher_pass", "target/new"):
        assert f"{group}/{rerun}" not in done, rerun
    for kept in ("fit/baseline", "export/baseline", "eval/baseline", "fit/lc", "eval/lc"):
        assert f"{group}/{kept}" in done, kept
    assert (again / group / "models" / "baseline.pt2").is_file()
    # a plan that grew by a row that needs the LC student's weights (not archived): LC trains
    # again, and its archived marker waits in steps/replaced/ to be kept by the new one
    needs_lc = [*steps, Step(f"{group}/export/lc_again", "export", (f"{group}/fit/lc",),
                             {"out": f"{group}/models/lc_again.pt2"})]  # fmt: skip
    third = tmp_path / "third"
    third.mkdir()
    assert group in restore(third, needs_lc, results)
    assert not marker_path(third, f"{group}/fit/lc").exists()
    assert marker_path(third, f"{group}/eval/lc").is_file()
    kept = json.loads(replaced_path(third, f"{group}/fit/lc").read_text())
    assert kept == json.loads(marker_path(out, f"{group}/fit/lc").read_text())
    # a plan that lost steps is another experiment: nothing restored
    assert group not in restore(tmp_path / "lost", steps[1:], results)


def test_report_only_on_a_clean_clone_reads_the_committed_summaries(quick_run, tmp_path):
    """--report-only with an empty OUT writes the report of the archived groups."""
    from experiments.archive import archive
    from experiments.report import write_report

    out, _, _ = quick_run
    results = tmp_path / "results"
    archive(out, plan(load_config(QUICK_CONFIG)), results)
    config = tmp_path / "quick.toml"
    base = QUICK_CONFIG.parent / "lc_synth.toml"
    text = QUICK_CONFIG.read_text().replace('base = "lc_synth.toml"', f'base = "{base}"')
    config.write_text(text.replace('smoke_run = ""', f'smoke_run = ""\nresults_dir = "{results}"'))
    clone, docs = tmp_path / "clone", tmp_path / "docs"
    result = CliRunner().invoke(
        main, ["--config", str(config), "--out", str(clone), "--report-only", "--report-dir",
               str(docs)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert not (clone / "steps").exists()  # nothing ran, nothing was restored
    got = (docs / "results.md").read_text()
    want = write_report(out, tmp_path / "docs_now").read_text()

    def table1(text: str) -> str:
        return text.split("## Table 1 analogue", 1)[1].split("\n## ", 1)[0]

    assert "| Baseline |" in table1(got) and table1(got) == table1(want)
    # --list counts the committed steps as done, and estimates what is left
    listed = CliRunner().invoke(main, ["--config", str(config), "--out", str(clone), "--list"])
    assert listed.exit_code == 0, listed.output
    assert "done  p0.10_q0.10_s0/fit/baseline" in listed.output and "todo" not in listed.output


def test_unfinished_fits_park_and_unpark_their_checkpoints(quick_run, tmp_path):
    from experiments.archive import PARKED, archive, park, unpark

    out, _, _ = quick_run
    steps = plan(load_config(QUICK_CONFIG))
    fit = next(s for s in steps if s.kind == "fit")
    group = fit.name.split("/", 1)[0]
    # a copy of OUT where this fit was cut off: its checkpoint is there, its marker is not
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    marker_path(cut, fit.name).unlink()
    results = tmp_path / "results"
    assert park(cut, steps, results) == [fit.name]
    kept = results / group / PARKED / Path(fit.args["run"]).relative_to(group)
    assert (kept / "checkpoint.pt").is_file() and (kept / "log.csv").is_file()
    # a fresh machine gets the checkpoint back where the fit will look for it ...
    fresh = tmp_path / "fresh"
    assert unpark(fresh, steps, results) == [fit.name]
    ckpt = fresh / fit.args["run"] / "checkpoint.pt"
    assert ckpt.read_bytes() == (out / fit.args["run"] / "checkpoint.pt").read_bytes()
    assert unpark(fresh, steps, results) == []  # ... once: it never overwrites a newer one
    # --list says how far an unfinished fit got, here or in its parked copy
    from experiments.archive import fit_progress

    assert fit_progress(tmp_path / "elsewhere", fit, results) == (20, True)
    assert fit_progress(fresh, fit, results) == (20, False)
    assert fit_progress(tmp_path / "elsewhere", fit, None) is None
    # a finished group needs no parked checkpoints: archiving it drops them
    assert group in archive(out, steps, results)
    assert not (results / group / PARKED).exists()


def test_a_parked_fit_keeps_its_curve_points_instead_of_its_checkpoints(quick_run, tmp_path):
    """--park evaluates the kept checkpoints of an unfinished fit with a learning curve and
    keeps those points, not the checkpoints; the curve step on a fresh machine then gives
    the points it would have given from the checkpoints."""
    from experiments.archive import PARKED, park, unpark
    from experiments.steps import CURVE_DIR, cache_curve_points, run_curve

    out, _, _ = quick_run
    cfg = load_config(QUICK_CONFIG)
    steps = plan(cfg)
    curve = next(s for s in steps if s.kind == "curve")
    fit = curve.deps[0]
    run_rel = Path(curve.args["run"])
    expected = json.loads(marker_path(out, curve.name).read_text())["outputs"]["points"]
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    for name in (fit, curve.name):
        marker_path(cut, name).unlink()
    shutil.rmtree(cut / run_rel / CURVE_DIR)
    assert cache_curve_points(cfg, cut, steps) == [fit]
    kept = sorted(p.stem for p in (cut / run_rel / "steps").glob("step_*.pt"))
    assert len(kept) >= 2
    assert sorted(p.stem for p in (cut / run_rel / CURVE_DIR).glob("*.json")) == kept
    # a checkpoint that is not the one a point was computed from (a fit retrained in place)
    # is evaluated again: here the first kept checkpoint replaced by the last
    first, last = (cut / run_rel / "steps" / f"{k}.pt" for k in (kept[0], kept[-1]))
    original = first.read_bytes()
    shutil.copy2(last, first)
    again = run_curve(cfg, cut, curve.args)["points"]
    assert expected[0]["probe"] != expected[-1]["probe"]  # the two checkpoints differ
    assert again[0]["probe"] == expected[-1]["probe"] and again[0]["step"] == expected[0]["step"]
    first.write_bytes(original)
    assert run_curve(cfg, cut, curve.args)["points"] == expected
    results = tmp_path / "results"
    assert fit in park(cut, steps, results)
    parked = results / fit.split("/", 1)[0] / PARKED / run_rel.relative_to(fit.split("/", 1)[0])
    assert not list(parked.glob("steps/*.pt"))
    assert len(list(parked.glob("curve/*.json"))) == len(kept)
    fresh = tmp_path / "fresh"
    shutil.copytree(cut, fresh)
    shutil.rmtree(fresh / run_rel)
    assert fit in unpark(fresh, steps, results)
    assert not (fresh / run_rel / "steps").exists()
    assert run_curve(cfg, fresh, curve.args)["points"] == expected
    # a point computed under other settings whose checkpoint is gone is an error, not a gap
    point = fresh / run_rel / CURVE_DIR / f"{kept[0]}.json"
    body = json.loads(point.read_text())
    body["key"]["max_images"] = 3
    point.write_text(json.dumps(body))
    with pytest.raises(LcposeError, match=f"{point.name}: computed with other evaluation"):
        run_curve(cfg, fresh, curve.args)


def test_a_group_still_running_is_archived_as_far_as_it_got(quick_run, tmp_path):
    """Finished steps of a group with unfinished fits survive the machine: their markers (and
    the exported teacher) come back, the stores they fed are rebuilt, the rest runs."""
    from experiments.archive import DONE, PARKED, archive, park, restore

    out, _, _ = quick_run
    steps = plan(load_config(QUICK_CONFIG))
    group = steps[0].name.split("/", 1)[0]
    by_name = {s.name: s for s in steps}
    cut = tmp_path / "cut"  # the LC student and everything after it did not finish
    shutil.copytree(out, cut)
    unfinished = {f"{group}/{n}" for n in ("fit/lc", "eval/lc", "curve/lc", "export/lc",
                                           "teacher_pass/lc", "target/lc_x2", "quality/lc_x2",
                                           "fit/lc_x2", "eval/lc_x2", "figures")}  # fmt: skip
    unfinished &= set(by_name)
    for name in unfinished:
        marker_path(cut, name).unlink()
    results = tmp_path / "results"
    assert group in archive(cut, steps, results) and park(cut, steps, results)
    record = json.loads((results / group / DONE).read_text())
    members = {s.name for s in steps if s.name.startswith(group + "/")}
    assert set(record["steps"]) == members - unfinished
    assert "runs/lc/log.csv" not in record["files"]  # the unfinished fit is parked instead
    assert "runs/baseline/log.csv" in record["files"] and "models/baseline.pt2" in record["files"]
    assert archive(cut, steps, results) == []  # nothing new
    # a step that ran again (the config changed one of its settings): same steps, new marker
    again = marker_path(cut, f"{group}/eval/baseline")
    again.write_text(json.dumps({**json.loads(again.read_text()), "args": {"new": 1}}))
    assert archive(cut, steps, results) == [group]
    assert (results / "steps" / again.name).read_bytes() == again.read_bytes()
    assert archive(cut, steps, results) == []
    # a fresh machine: evaluations and the exported teacher come back, stores do not
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert group in restore(fresh, steps, results)
    done = {n for n in members if marker_path(fresh, n).is_file()}
    for kept in ("fit/baseline", "eval/baseline", "export/baseline", "eval/kd05", "fit/kd05"):
        assert f"{group}/{kept}" in done, kept
    for rerun in ("gt_store", "teacher_pass", "target/lc", "fit/lc"):
        assert f"{group}/{rerun}" not in done, rerun
    # the next session archives what it added to what was there; whole, the parked go
    partly = tmp_path / "partly"  # first only the LC student finished: its parked run goes
    shutil.copytree(out, partly)
    for name in unfinished - {f"{group}/fit/lc"}:
        marker_path(partly, name).unlink()
    assert group in archive(partly, steps, results)
    assert not (results / group / PARKED / "runs" / "lc").exists()
    assert group in archive(out, steps, results)
    assert set(json.loads((results / group / DONE).read_text())["steps"]) == members
    assert not (results / group / PARKED).exists()


def test_corrections_beyond_the_paper_plan_and_run_on_the_quick_outputs(quick_run, tmp_path):
    """Rows of the new corrections (a TTA teacher pass, gated and keypoint targets) and the
    label-quality steps: planned once each, and run on the quick experiment's teacher."""
    from dataclasses import replace

    from experiments.steps import execute_step

    out, _, _ = quick_run
    cfg = load_config(QUICK_CONFIG)
    cfg = replace(
        cfg,
        protocol=replace(
            cfg.protocol, methods=("lc", "gated", "kp_tta"), iterate=(), quality=True
        ),  # fmt: skip
        sweep=replace(cfg.sweep, levels=()),
    )
    steps = {s.name: s for s in plan(cfg)}
    d = next(iter(steps)).split("/", 1)[0]
    assert steps[f"{d}/teacher_pass/tta_flip"].args["tta"] == "flip"
    assert steps[f"{d}/target/kp_tta"].args["cache"] == f"{d}/cache_tta_flip.zarr"
    assert steps[f"{d}/target/gated"].args["cache"] == f"{d}/gt.zarr"
    quality = sorted(n.split("/")[-1] for n in steps if "/quality/" in n)
    assert quality == ["baseline", "clean", "gated", "kp_tta", "lc", "teacher", "teacher_tta_flip"]
    # run the new steps where the quick experiment left its teacher and cache
    work = tmp_path / "out"
    shutil.copytree(out, work)
    for name in (
        f"{d}/teacher_pass/tta_flip",
        f"{d}/target/gated",
        f"{d}/target/kp_tta",
        f"{d}/quality/baseline",
        f"{d}/quality/kp_tta",
        f"{d}/quality/teacher_tta_flip",
    ):
        body = execute_step(cfg, work, steps[name])  # fmt: skip
        assert marker_path(work, name).is_file()
    assert 0.0 <= body["outputs"]["metrics"]["AP"] <= 1.0 and body["outputs"]["samples"] > 0
    tta = json.loads(marker_path(work, f"{d}/teacher_pass/tta_flip").read_text())
    assert tta["outputs"]["complete"] is True


def test_augmentation_table_means_spreads_and_paired_differences(tmp_path):
    from experiments.aug_table import table

    def write(folder: Path, seed: int, final: float, curve: dict[int, float]) -> None:
        steps = folder / "steps"
        steps.mkdir(parents=True, exist_ok=True)
        group = f"p0.10_q0.10_s{seed}"
        ev = {"outputs": {"metrics": {"clean": {"AP": final}}}}
        (steps / f"{group}__eval__baseline.json").write_text(json.dumps(ev))
        pts = [{"step": s, "metrics": {"clean": {"AP": v}}} for s, v in curve.items()]
        (steps / f"{group}__curve__baseline.json").write_text(
            json.dumps({"outputs": {"points": pts}})
        )

    k1, fresh = tmp_path / "aug_k1", tmp_path / "aug_fresh"
    for seed, (a, b) in enumerate([(0.28, 0.48), (0.30, 0.46), (0.26, 0.47)]):
        write(k1, seed, a, {2000: 0.35, 16000: a})
        write(fresh, seed, b, {2000: 0.34, 16000: b})
    # a Baseline of another rate (an experiment's sweep in the same folder) is not a row
    (fresh / "steps" / "p0.00_q0.00_s0__eval__baseline.json").write_text(
        json.dumps({"outputs": {"metrics": {"clean": {"AP": 0.9}}}})
    )
    text = table([k1, fresh], steps=(2000, 16000))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    assert rows["aug_k1"].split(" | ")[1:5] == ["0,1,2", "35.0 ± 0.0", "28.0 ± 2.0", "28.0 ± 2.0"]
    # paired: 20, 16, 21 AP points -> mean 19.0, sample std 2.6
    assert rows["aug_fresh"].split(" | ")[5].strip(" |") == "19.0 ± 2.6"


def test_quality_table_means_seeds_and_orders_the_stores(tmp_path):
    from experiments.quality_table import table

    steps = tmp_path / "steps"
    steps.mkdir()

    def marker(name: str, outputs: dict) -> None:
        (steps / f"{name}.json").write_text(json.dumps({"outputs": outputs}))

    truth = {"heatmaps": {"recovered_fraction": {"total": 0.4}, "false_fraction": 0.2},
             "pafs": {"recovered_fraction": {"total": 0.3}, "false_fraction": 0.1}}  # fmt: skip
    for seed, ap in ((0, 0.70), (1, 0.74)):
        g = f"p0.10_q0.10_s{seed}"
        marker(f"{g}__quality__lc", {"metrics": {"AP": ap, "AP50": 0.9, "AR": 0.8}})
        marker(f"{g}__target__lc", {"analytics": {"truth": truth}})
        marker(f"{g}__quality__baseline", {"metrics": {"AP": 0.5, "AP50": 0.8, "AR": 0.6}})
    marker("p0.00_q0.00_s0__quality__lc", {"metrics": {"AP": 0.9, "AP50": 0.9, "AR": 0.9}})
    lines = table(tmp_path, 0.1).splitlines()
    assert (
        lines[2] == "| GT (noisy labels) | 0,1 | 50.0 ± 0.0 | 80.0 ± 0.0 | 60.0 ± 0.0 |  |  |  |  |"
    )
    assert lines[3] == (
        "| LC | 0,1 | 72.0 ± 2.8 | 90.0 ± 0.0 | 80.0 ± 0.0 | 40.0 ± 0.0% | 20.0 ± 0.0% "
        "| 30.0 ± 0.0% | 10.0 ± 0.0% |"
    )
    assert len(lines) == 4  # the p = q = 0 store is another level
