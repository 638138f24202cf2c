"""The training loop: loss goes down, bit-for-bit resume, checkpoints, DDP, CLI errors, plots."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

import trainer.fit as fit_mod
from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.store.layout import create_maps, read_attrs, update_attrs
from lcdata.store.lock import write_lock
from trainer.checkpoint import model_from_checkpoint
from trainer.cli import cli
from trainer.config import TrainConfig
from trainer.fit import fit, log_columns, lr_at
from trainer.losses import stage_losses
from trainer.plot import plot_runs

RENDER = RenderConfig(input_size=64, stride=4, sigma=3.0)
# tiny model, 1 reader in the training process, reproducible: a step takes ~0.05 s here
CFG = TrainConfig(
    model="tiny",
    steps=6,
    batch_size=4,
    lr=1e-3,
    workers=0,
    log_every=1,
    checkpoint_every=3,
    deterministic=True,
)


def coco_mini_root() -> Path:
    """COCO-MINI, as the `coco_mini` fixture finds it (which is function-scoped)."""
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"
    if not (root / "annotations").is_dir():
        if os.environ.get("LC_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"COCO-MINI not found at {root} and LC_REQUIRE_SHARED_DATA=1")
        pytest.skip(f"COCO-MINI not found at {root}")
    return root


def _build(out: Path, *, seed: int) -> Path:
    root = coco_mini_root()
    build_gt_store(
        root / "annotations" / "person_keypoints_val2017.json",
        root / "val2017",
        out,
        render=RENDER,
        build=BuildConfig(views_per_image=1, seed=seed, samples_per_shard=8),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 samples of 64 px, stride 4 (16x16 maps), 8 samples per shard."""
    return _build(tmp_path_factory.mktemp("fit") / "gt.zarr", seed=1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_lr_schedule_is_the_papers_step() -> None:
    cfg = TrainConfig(steps=200_000)
    assert lr_at(0, cfg) == 1e-4 and lr_at(99_999, cfg) == 1e-4
    assert lr_at(100_000, cfg) == pytest.approx(1e-5) and lr_at(199_999, cfg) == pytest.approx(1e-5)


def test_fit_lowers_the_loss_and_logs_every_column(store: Path, tmp_path: Path) -> None:
    # 32 samples, batch 4, one reader: every 8 steps are one epoch over the same 32 samples
    cfg = replace(CFG, steps=32, lr=2e-3, lr_decay_at=1.0, checkpoint_every=100)
    result = fit(cfg, store, tmp_path / "run", progress=False)
    rows = _read_log(tmp_path / "run")
    assert list(rows[0]) == log_columns(2) == [
        "step", "epoch", "lr", "loss", "loss_heatmaps", "loss_pafs",
        "loss_stage1", "loss_stage2", "data_s", "step_s", "wait_share",
    ]  # fmt: skip
    assert [int(r["step"]) for r in rows] == list(range(1, 33))
    loss = np.array([float(r["loss"]) for r in rows])
    first_epoch, last_epoch = loss[:8].mean(), loss[-8:].mean()  # measured: 98 -> 80
    assert last_epoch < 0.9 * first_epoch, (first_epoch, last_epoch)
    r = rows[-1]
    assert float(r["loss"]) == pytest.approx(float(r["loss_heatmaps"]) + float(r["loss_pafs"]))
    assert float(r["loss"]) == pytest.approx(float(r["loss_stage1"]) + float(r["loss_stage2"]))
    assert float(r["epoch"]) == 32 * 4 / 32 and float(r["lr"]) == 2e-3
    assert float(r["step_s"]) >= float(r["data_s"]) >= 0
    assert result.step == 32 and result.last_row["step"] == 32


def test_checkpoint_contents_load_with_weights_only(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = fit(CFG, store, run, progress=False)
    ckpt = _load(run / "checkpoint.pt")
    for key in (
        "model", "model_name", "stride", "input_size", "skeleton", "model_kwargs",
        "optimizer", "step", "rng", "config", "store_attrs", "store_path",
    ):  # fmt: skip
        assert key in ckpt, key
    assert ckpt["step"] == 6 and ckpt["model_name"] == "tiny" and ckpt["stride"] == 4
    assert ckpt["input_size"] == 64 and ckpt["config"] == asdict(CFG)
    assert ckpt["store_attrs"] == read_attrs(store)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    final = _load(run / "final.pt")
    assert "optimizer" not in final and final["step"] == 6
    for name, value in result.model.state_dict().items():
        assert torch.equal(final["model"][name], value), name
    # the exporter's reader rebuilds the trained model from final.pt
    model, info = model_from_checkpoint(run / "final.pt")
    assert info.model_name == "tiny" and info.stride == 4 and info.step == 6
    x = torch.zeros(1, 3, 64, 64)
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[-1][0], result.model(x)[-1][0])
    assert not list(run.glob("*.tmp"))  # atomic writes leave no temporary files


class _Interrupt(Exception):
    pass


def _fit_killed_in_step_5(cfg: TrainConfig, store: Path, run: Path, monkeypatch) -> None:
    """`fit` of `cfg` into `run`, killed during step 5 (after the checkpoint of step 3)."""
    calls, real = {"n": 0}, stage_losses

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise _Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_mod, "stage_losses", interrupted)
    with pytest.raises(_Interrupt):
        fit(cfg, store, run, progress=False)
    monkeypatch.setattr(fit_mod, "stage_losses", real)


def test_resume_continues_bit_for_bit(store: Path, tmp_path: Path, monkeypatch) -> None:
    fit(CFG, store, tmp_path / "straight", progress=False)
    _fit_killed_in_step_5(CFG, store, tmp_path / "resumed", monkeypatch)
    assert _load(tmp_path / "resumed" / "checkpoint.pt")["step"] == 3
    assert len(_read_log(tmp_path / "resumed")) == 4  # step 4 was logged before the kill
    result = fit(CFG, store, tmp_path / "resumed", resume=True, progress=False)
    assert result.step == 6

    a, b = _load(tmp_path / "straight" / "final.pt"), _load(tmp_path / "resumed" / "final.pt")
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    opt_a = _load(tmp_path / "straight" / "checkpoint.pt")["optimizer"]
    opt_b = _load(tmp_path / "resumed" / "checkpoint.pt")["optimizer"]
    for i, state in opt_a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, opt_b["state"][i][key]), (i, key)
    # the log of the resumed run has each step once, with the same losses
    rows_a, rows_b = _read_log(tmp_path / "straight"), _read_log(tmp_path / "resumed")
    assert [r["step"] for r in rows_b] == [str(s) for s in range(1, 7)]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


def test_resume_of_a_finished_run_does_nothing(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(CFG, store, run, progress=False)
    before = _load(run / "final.pt")["model"]
    result = fit(CFG, store, run, resume=True, progress=False)
    assert result.step == 6 and result.last_row is None
    after = _load(run / "final.pt")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_refuses_other_model_config_or_store(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = replace(CFG, steps=3)
    fit(cfg, store, run, progress=False)
    with pytest.raises(
        LcposeError, match=r"cannot resume: checkpoint is of model 'tiny', not 'small'"
    ):
        fit(replace(cfg, model="small"), store, run, resume=True, progress=False)
    with pytest.raises(
        LcposeError, match=r"checkpoint has model options .*'width': 64.*'width': 32"
    ):
        fit(replace(cfg, model_kwargs={"width": 32}), store, run, resume=True, progress=False)
    with pytest.raises(LcposeError, match="checkpoint has batch_size=4, this run batch_size=8"):
        fit(replace(cfg, batch_size=8), store, run, resume=True, progress=False)
    other = _build(tmp_path / "other.zarr", seed=2)
    with pytest.raises(LcposeError, match="trained on another store .*attribute 'build' differs"):
        fit(cfg, other, run, resume=True, progress=False)
    with pytest.raises(LcposeError, match="already holds a training run .*pass --resume"):
        fit(cfg, store, run, progress=False)


def test_resume_without_checkpoint_starts_fresh(store: Path, tmp_path: Path) -> None:
    result = fit(replace(CFG, steps=2), store, tmp_path / "new", resume=True, progress=False)
    assert result.step == 2 and (tmp_path / "new" / "final.pt").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, store: str, out: str, port: int, results: str) -> None:
    """One DDP process as torchrun would start it (env vars), running `fit` on gloo."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    cfg = replace(CFG, steps=3, checkpoint_every=2, device="cpu")
    result = fit(cfg, store, out, progress=False)
    torch.save(result.model.state_dict(), Path(results) / f"rank{rank}.pt")


def test_ddp_two_cpu_processes(store: Path, tmp_path: Path) -> None:
    run, results = tmp_path / "ddp", tmp_path / "results"
    results.mkdir()
    # fork, not spawn: a spawned child spends seconds importing torch again; each child sets one
    # thread before computing, as DataLoader workers do, so the parent's thread pool is unused
    torch.multiprocessing.start_processes(
        _ddp_rank,
        args=(str(store), str(run), _free_port(), str(results)),
        nprocs=2,
        start_method="fork",
    )
    ckpt = _load(run / "checkpoint.pt")
    assert ckpt["step"] == 3 and ckpt["world_size"] == 2
    final = _load(run / "final.pt")["model"]
    rank0, rank1 = _load(results / "rank0.pt"), _load(results / "rank1.pt")
    for name, value in final.items():
        assert torch.equal(value, rank0[name]), name  # rank 0 saved what it trained
    model, _ = model_from_checkpoint(run / "final.pt")
    for name, _ in model.named_parameters():
        # DDP averaged the gradients: every rank holds the same weights (BatchNorm running
        # statistics are per rank between broadcasts, so only parameters are compared)
        assert torch.equal(rank0[name], rank1[name]), name
    rows = _read_log(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]  # one log, written by rank 0
    assert float(rows[-1]["epoch"]) == 3 * 4 * 2 / 32  # global batch = 4 per rank x 2


# --------------------------------------------------------------------------------------------
# command line


def test_cli_defaults_match_train_config() -> None:
    command = cli.get_command(None, "fit")
    params = command.make_context("fit", ["--store", "s.zarr", "--out", "run"]).params
    checked = [f.name for f in fields(TrainConfig) if f.name in params and f.name != "model_kwargs"]
    assert len(checked) == len(fields(TrainConfig)) - 1  # every field but model_kwargs
    for name in checked:
        assert params[name] == getattr(TrainConfig(), name), name


def test_cli_fit_writes_a_run_and_plot_draws_it(store: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for name in ("a", "b"):
        args = ["fit", "--store", str(store), "--out", str(tmp_path / name), "--steps", "3"]
        args += ["--batch-size", "4", "--workers", "0", "--log-every", "1", "--quiet"]
        args += ["--device", "cpu", "--model-kwarg", "num_stages=1", "--lr", "1e-3"]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "tiny: 3 steps, loss" in result.output
    assert _load(tmp_path / "a" / "final.pt")["model_kwargs"]["num_stages"] == 1
    out = tmp_path / "curves.png"
    result = runner.invoke(
        cli, ["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--per-stage"]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_refuses_a_folder_without_log(tmp_path: Path) -> None:
    with pytest.raises(LcposeError, match="no log.csv"):
        plot_runs([tmp_path], tmp_path / "x.png")


def _cli_error(args: list[str]) -> str:
    result = CliRunner().invoke(cli, ["fit", *args, "--quiet", "--workers", "0"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_cli_errors_are_one_line(store: Path, tmp_path: Path) -> None:
    base = ["--store", str(store), "--out", str(tmp_path / "run"), "--steps", "2"]
    msg = _cli_error([*base, "--target", "teacher"])
    assert "store has no 'teacher' targets" in msg

    incomplete = tmp_path / "incomplete.zarr"
    shutil.copytree(store, incomplete)
    update_attrs(zarr.open_group(str(incomplete), mode="r+"), complete=False)
    msg = _cli_error(["--store", str(incomplete), "--out", str(tmp_path / "r2")])
    assert "store is marked incomplete" in msg

    no_targets = tmp_path / "no_targets.zarr"
    shutil.copytree(store, no_targets)
    shutil.rmtree(no_targets / "gt")
    msg = _cli_error(["--store", str(no_targets), "--out", str(tmp_path / "r3")])
    assert "store has no training targets" in msg

    ok = CliRunner().invoke(cli, ["fit", *base, "--batch-size", "4", "--workers", "0", "--quiet"])
    assert ok.exit_code == 0, ok.output
    assert "already holds a training run" in _cli_error(base)
    msg = _cli_error([*base, "--resume", "--model", "small", "--batch-size", "4"])
    assert "cannot resume: checkpoint is of model 'tiny', not 'small'" in msg
    assert "--model-kwarg 'width'" in _cli_error([*base, "--model-kwarg", "width"])


def test_a_second_fit_on_the_same_run_folder_is_refused(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with write_lock(out):  # stands for another live `trainer fit` on this folder
        with pytest.raises(LcposeError, match="another process is writing"):
            fit(TrainConfig(model="tiny", steps=1, batch_size=2, workers=0), store, out)
    assert not (out / "checkpoint.pt").exists()


def test_config_errors_name_the_field_and_the_cli_names_the_option(store, tmp_path) -> None:
    with pytest.raises(LcposeError, match=r"^TrainConfig\.steps: must be >= 1, got 0$"):
        TrainConfig(steps=0)
    with pytest.raises(LcposeError, match=r"^TrainConfig\.reader: must be one of threads"):
        TrainConfig(reader="fibres")
    msg = _cli_error(["--store", str(store), "--out", str(tmp_path / "r"), "--steps", "0"])
    assert msg == "Error: --steps: must be >= 1, got 0"
    msg = _cli_error(["--store", str(store), "--out", str(tmp_path / "r"), "--lr", "-1"])
    assert msg == "Error: --lr: must be > 0, got -1.0"


def test_keep_checkpoints_keeps_every_checkpoint_without_optimizer(store, tmp_path) -> None:
    run = tmp_path / "run"
    fit(replace(CFG, keep_checkpoints=True), store, run, progress=False)
    kept = sorted((run / "steps").glob("step_*.pt"))
    assert [p.name for p in kept] == ["step_0000003.pt", "step_0000006.pt"]
    last = torch.load(kept[-1], weights_only=True)
    assert "optimizer" not in last and last["step"] == 6
    final = torch.load(run / "final.pt", weights_only=True)
    for name, value in final["model"].items():
        assert torch.equal(value, last["model"][name]), name


def test_checkpoints_of_another_format_or_a_newer_version_are_refused(store, tmp_path) -> None:
    run = tmp_path / "run"
    fit(replace(CFG, steps=3), store, run, progress=False)
    ckpt = torch.load(run / "final.pt", weights_only=True)
    assert ckpt["format"] == "lcpose-checkpoint" and ckpt["format_version"] == 1
    torch.save({**ckpt, "format_version": 2}, tmp_path / "newer.pt")
    with pytest.raises(LcposeError, match="format version 2 is newer than this lcpose reads"):
        model_from_checkpoint(tmp_path / "newer.pt")
    torch.save({**ckpt, "format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(LcposeError, match="not an lcpose checkpoint"):
        model_from_checkpoint(tmp_path / "other.pt")


# --------------------------------------------------------------------------------------------
# readiness for real runs: readers, finished runs, wait share, mixed precision


def test_resume_with_other_readers_continues_bit_for_bit(store: Path, tmp_path: Path) -> None:
    # a run resumed on a machine with other cores: the readers change, the batches do not
    cfg = replace(CFG, workers=2, lr_decay_at=1.0)
    fit(cfg, store, tmp_path / "straight", progress=False)
    fit(replace(cfg, steps=3), store, tmp_path / "moved", progress=False)
    ckpt = _load(tmp_path / "moved" / "checkpoint.pt")
    ckpt["config"]["steps"] = 6  # as if the run had been started for 6 steps
    torch.save(ckpt, tmp_path / "moved" / "checkpoint.pt")
    fit(replace(cfg, workers=0), store, tmp_path / "moved", resume=True, progress=False)
    a, b = _load(tmp_path / "straight" / "final.pt"), _load(tmp_path / "moved" / "final.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    run = json.loads((tmp_path / "moved" / "run.json").read_text())
    assert run["lanes"] == 2 and run["readers"] == 0


def test_default_options_fit_a_one_block_store(tmp_path: Path) -> None:
    root = coco_mini_root()
    one = tmp_path / "one.zarr"
    build_gt_store(
        root / "annotations" / "person_keypoints_val2017.json",
        root / "val2017",
        one,
        render=RENDER,
        build=BuildConfig(views_per_image=1, seed=1, samples_per_shard=64),  # 32 samples
        progress=False,
    )
    result = CliRunner().invoke(
        cli, ["fit", "--store", str(one), "--out", str(tmp_path / "run"), "--steps", "3",
              "--quiet", "--model-kwarg", "num_stages=1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["workers"] == "auto" and run["readers"] >= 1
    assert run["lanes"] == 1  # the default 2, cut to the store's one block


def test_finished_fit_reruns_after_a_later_stage_was_added(tmp_path: Path) -> None:
    # `make demo` twice: the teacher trained on cache.zarr, then the teacher pass added a
    # stage (arrays and attributes) to it; re-running the finished fit must do nothing
    store = _build(tmp_path / "cache.zarr", seed=1)
    cfg = replace(CFG, steps=3, target="gt", workers="auto")  # the CLI's default readers
    fit(cfg, store, tmp_path / "teacher", progress=False)
    group = zarr.open_group(str(store), mode="r+")
    attrs = read_attrs(store)
    create_maps(group, "teacher", attrs)
    update_attrs(
        group, stages=["gt", "teacher"], teacher={"sha256": "ab" * 32, "model_name": "tiny"}
    )
    result = fit(cfg, store, tmp_path / "teacher", resume=True, progress=False)
    assert result.step == 3 and result.last_row is None
    # what training read still decides: another geometry or content is refused
    update_attrs(group, seed=12345)
    with pytest.raises(LcposeError, match="trained on another store .*attribute 'seed' differs"):
        fit(cfg, store, tmp_path / "teacher", resume=True, progress=False)


def test_log_has_the_wait_share_and_old_logs_resume(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fit(replace(CFG, steps=3), store, run, progress=False)
    rows = _read_log(run)
    for r in rows:
        share = float(r["wait_share"])
        assert 0 <= share <= 1
        assert share == pytest.approx(float(r["data_s"]) / float(r["step_s"]), rel=1e-5)
    # a log.csv of an older lcpose (no wait_share column) is continued, the column added
    text = (run / "log.csv").read_text().splitlines()
    old = [",".join(line.split(",")[:-1]) for line in text]
    (run / "log.csv").write_text("\n".join(old) + "\n")
    ckpt = _load(run / "checkpoint.pt")
    ckpt["config"]["steps"] = 5
    torch.save(ckpt, run / "checkpoint.pt")
    fit(replace(CFG, steps=5), store, run, resume=True, progress=False)
    rows = _read_log(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5] and "wait_share" in rows[0]
    from trainer.plot import read_log

    assert read_log(run)["wait_share"].shape == (5,)


def test_bf16_autocast_trains_on_cpu_close_to_fp32(store: Path, tmp_path: Path) -> None:
    cfg = replace(CFG, steps=8, lr=2e-3, lr_decay_at=1.0, checkpoint_every=100)
    fp32 = fit(cfg, store, tmp_path / "fp32", progress=False).last_row
    bf16 = fit(replace(cfg, amp="bf16"), store, tmp_path / "bf16", progress=False).last_row
    assert math.isfinite(bf16["loss"])
    # same batches and weights at the start; bf16 rounds activations to 8 bits of mantissa
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=0.05)
    assert bf16["loss"] != fp32["loss"]  # the forward really ran in bfloat16
    assert _load(tmp_path / "bf16" / "final.pt")["config"]["amp"] == "bf16"
    with pytest.raises(LcposeError, match="checkpoint has amp='bf16', this run amp='off'"):
        fit(cfg, store, tmp_path / "bf16", resume=True, progress=False)


def test_a_run_moved_to_another_precision_continues_and_records_it(
    store: Path, tmp_path: Path, monkeypatch
) -> None:
    run, cfg = tmp_path / "run", replace(CFG, amp="bf16")
    _fit_killed_in_step_5(cfg, store, run, monkeypatch)
    fp32 = replace(cfg, amp="off")
    with pytest.raises(LcposeError, match="--allow-amp-change continues it in this precision"):
        fit(fp32, store, run, resume=True, progress=False)
    assert fit(fp32, store, run, resume=True, progress=False, allow_amp_change=True).step == 6
    want = [{"from_step": 0, "amp": "bf16"}, {"from_step": 3, "amp": "off"}]
    assert json.loads((run / "run.json").read_text())["amp_history"] == want
    final = _load(run / "final.pt")
    assert final["amp_history"] == want and final["config"]["amp"] == "off"
    assert [int(r["step"]) for r in _read_log(run)] == [1, 2, 3, 4, 5, 6]
    # a later resume in the new precision needs no flag and keeps the history
    assert fit(fp32, store, run, resume=True, progress=False).step == 6
    assert _load(run / "checkpoint.pt")["amp_history"] == want


def test_fp16_keeps_its_grad_scaler_in_the_checkpoint(store: Path, tmp_path: Path) -> None:
    cfg = replace(CFG, steps=3, amp="fp16")
    row = fit(cfg, store, tmp_path / "run", progress=False).last_row
    assert math.isfinite(row["loss"])
    ckpt = _load(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["grad_scaler"]["scale"] > 0
    assert "grad_scaler" not in _load(tmp_path / "run" / "final.pt")


def test_channels_last_gives_the_same_training(store: Path, tmp_path: Path) -> None:
    cfg = replace(CFG, steps=3)
    a = fit(cfg, store, tmp_path / "a", progress=False).last_row
    b = fit(replace(cfg, channels_last=True), store, tmp_path / "b", progress=False).last_row
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)


def test_compile_wraps_the_model_and_saves_raw_weights(
    store: Path, tmp_path: Path, monkeypatch
) -> None:
    compiled = []

    def fake_compile(module):  # torch.compile's contract, without a C compiler here
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    fit(replace(CFG, steps=2, compile=True), store, tmp_path / "run", progress=False)
    assert len(compiled) == 1
    keys = _load(tmp_path / "run" / "final.pt")["model"].keys()
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in keys)


def test_fresh_augmentation_trains_resumes_and_is_part_of_the_run(
    store: Path, tmp_path: Path
) -> None:
    cfg = replace(CFG, steps=4, augment="fresh", checkpoint_every=2)
    row = fit(cfg, store, tmp_path / "run", progress=False).last_row
    assert math.isfinite(row["loss"])
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_info["view_targets"] == "rendered"  # a schema-2 GT store: GT re-rendered
    plain = fit(replace(cfg, augment="off"), store, tmp_path / "plain", progress=False).last_row
    assert row["loss"] != plain["loss"]
    with pytest.raises(LcposeError, match="checkpoint has augment='fresh', this run augment='off'"):
        fit(replace(cfg, augment="off"), store, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(LcposeError, match=r"TrainConfig\.augment: bad augment token 'spin=3'"):
        replace(cfg, augment="flip,spin=3")
