"""An experiment's configuration, read from TOML into typed, checked dataclasses.

A TOML file may name a `base` file it overrides.
Every field has its default here; a TOML file names only what differs. Unknown keys are
refused with the file and the key. The `[train]`, `[data.synth]` and `[eval.decode]` tables
are handed to the code they configure (`TrainConfig`, `SynthConfig`, `DecodeConfig`), which
checks their keys.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import dacite
import tomllib

from experiments.protocol import METHODS, STUDENTS
from lcdata.config import PRESETS, RenderConfig
from lcdata.errors import LcposeError
from lcdata.io import read_json, write_json_atomic
from lcdata.store.resume import first_difference
from trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
"""Repository root: relative paths in a config are relative to it."""
DEFAULT_CONFIG = ROOT / "experiments" / "lc_synth.toml"
QUICK_CONFIG = ROOT / "experiments" / "lc_quick.toml"


@dataclass(frozen=True)
class DataConfig:
    """The data sets: the synthetic benchmark (one per seed) or a given COCO data set."""

    source: str = "synth"  # "synth" or "coco"
    train_images: int = 3000
    val_images: int = 500
    missed_visible: float = 0.1  # p, failure 3
    unannotated: float = 0.1  # q, failure 4
    synth: dict[str, Any] = field(default_factory=dict)  # other SynthConfig fields
    train_annotations: str = ""  # source = "coco"
    train_dir: str = ""
    val_annotations: str = ""
    val_dir: str = ""


@dataclass(frozen=True)
class StoreConfig:
    """The GT store: a render preset (`lcdata.config.PRESETS`), fields of it replaced where
    given, views per image and samples per block."""

    preset: str = "synth"
    input_size: int | None = None
    stride: int | None = None
    sigma: float | None = None
    paf_half_width: float | None = None
    views_per_image: int = 2
    samples_per_shard: int = 64

    @property
    def render(self) -> RenderConfig:
        base = PRESETS[self.preset]
        return RenderConfig(
            input_size=base.input_size if self.input_size is None else self.input_size,
            stride=base.stride if self.stride is None else self.stride,
            sigma=base.sigma if self.sigma is None else self.sigma,
            paf_half_width=(
                base.paf_half_width if self.paf_half_width is None else self.paf_half_width
            ),
        )


@dataclass(frozen=True)
class ProtocolConfig:
    """Which rows are trained, on which seeds, and the analyses run on them."""

    methods: tuple[str, ...] = ("kd05", "kd1", "lc", "lc_hm", "lc_paf", "kd05_lc")
    iterate: tuple[str, ...] = ("lc_x2", "kd05_lc_x2")
    clean_bound: bool = True
    iterate_seeds: tuple[int, ...] | None = None  # seeds with the iterate rows; None = all
    clean_bound_seeds: tuple[int, ...] | None = None  # seeds with the clean bound; None = all
    curves: tuple[str, ...] = ("baseline", "kd05", "lc")
    coverage_samples: int = 1024
    coverage_threshold: float = 0.5
    figure_samples: int = 3
    teacher_batch: int = 16
    quality: bool = False  # label-quality AP (`lcdata score-labels`) of every target store
    quality_samples: int = 0  # score the first N samples of each store (0 = all)
    score_only: tuple[str, ...] = ()  # rows whose targets are made and scored, not trained
    # learning curves: each checkpoint's loss on a fixed probe of N training samples against
    # its own targets and the clean truth (`trainer.probe`; synthetic data only, 0 = off)
    probe_samples: int = 256
    # the Baseline trained again in this precision (`train.amp` values; "" = not) on these
    # seeds (None = all): where the Baselines ran in another precision than the students
    # (bf16 on one machine, fp32 on the next), the size of that effect, seed by seed
    precision_check: str = ""
    precision_check_seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class EvalConfig:
    max_images: int = 0  # 0 = every validation image
    curve_max_images: int = 0  # learning-curve points on the first N val images (0: max_images)
    decode: dict[str, Any] = field(default_factory=dict)  # DecodeConfig fields


@dataclass(frozen=True)
class SweepConfig:
    """Baseline and `methods` as p = q grows (failures 1-2 stay on; `all_off`: none at all)."""

    levels: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = ("lc",)
    all_off: bool = False


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that decides an experiment (saved as OUT/experiment.json)."""

    name: str = "experiment"
    out: str = "runs/experiment"
    seeds: tuple[int, ...] = (0,)
    parallel: int = 1  # steps at once, each in its own process ...
    threads: int = 1  # ... with this many torch / OpenMP threads
    report_dir: str = ""
    smoke_run: str = ""
    results_dir: str = ""  # committed summaries of finished groups (experiments.archive)
    compare_with: str = ""  # another experiment's summary the report sets beside this one
    data: DataConfig = field(default_factory=DataConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, every model
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    config_file: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (tuples as lists) that `from_json` reads back."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str = "config") -> ExperimentConfig:
        """Typed config from a (merged) dict; unknown keys and wrong types are refused."""
        _check_keys(cls, data, where=where)
        try:
            cfg = dacite.from_dict(cls, data, config=dacite.Config(strict=True, cast=[tuple]))
        except dacite.DaciteError as err:
            raise LcposeError(f"{where}: {err}") from None
        cfg.check(where)
        return cfg

    def check(self, where: str) -> None:
        """Cross-field checks (methods that exist, an iteration's teacher among the rows)."""
        for key in (
            *self.protocol.methods, *self.protocol.iterate, *self.sweep.methods,
            *self.protocol.score_only,
        ):  # fmt: skip
            if key not in STUDENTS:
                raise LcposeError(
                    f"{where}: unknown student method {key!r} (choose from {', '.join(STUDENTS)})"
                )
        for key in self.protocol.curves:
            if key not in METHODS:
                raise LcposeError(f"{where}: protocol.curves: unknown method {key!r}")
        for key in self.protocol.iterate:
            teacher = METHODS[key].teacher
            if teacher is None or teacher not in self.protocol.methods:
                raise LcposeError(
                    f"{where}: protocol.iterate: {key!r} needs its teacher {teacher!r} in "
                    f"protocol.methods"
                )
        if self.protocol.precision_check not in ("", "off", "bf16", "fp16"):
            raise LcposeError(
                f"{where}: protocol.precision_check must be '', 'off', 'bf16' or 'fp16', not "
                f"{self.protocol.precision_check!r}"
            )
        if self.data.source not in ("synth", "coco"):
            raise LcposeError(f"{where}: data.source must be 'synth' or 'coco'")
        if self.data.source == "coco" and (self.sweep.levels or self.sweep.all_off):
            raise LcposeError(f"{where}: a defect sweep needs data.source = 'synth'")
        if self.store.preset not in PRESETS:
            raise LcposeError(f"{where}: store.preset must be one of {', '.join(PRESETS)}")
        if self.parallel < 1 or self.threads < 1:
            raise LcposeError(f"{where}: parallel and threads must be >= 1")
        if not self.seeds:
            raise LcposeError(f"{where}: seeds must list at least one seed")
        # fail now, not in the first training step, on a TrainConfig field that does not exist
        train_config(self, seed=0, target="gt")
        self.store.render  # noqa: B018 - validates the geometry

    @property
    def train_steps(self) -> int:
        return int(self.train.get("steps", TrainConfig.steps))


def _check_keys(cls: type, data: dict[str, Any], *, where: str, prefix: str = "") -> None:
    """Refuse keys `cls` (a config dataclass, nested ones included) does not have; the
    message names the table (dacite's would not)."""
    known = {f.name: f for f in fields(cls)}
    for key, value in data.items():
        if key not in known:
            raise LcposeError(f"{where}: unknown key {prefix + key!r}")
        sub = known[key].type
        sub = _TABLES.get(sub) if isinstance(sub, str) else None
        if sub is not None and isinstance(value, dict):
            _check_keys(sub, value, where=where, prefix=f"{prefix}{key}.")


def train_config(cfg: ExperimentConfig, *, seed: int, target: str) -> TrainConfig:
    """The `TrainConfig` of every model of the experiment (only seed and target group vary)."""
    fields = dict(cfg.train)
    fields.update(seed=int(seed), target=target)
    try:
        return TrainConfig(**fields)
    except TypeError as err:
        raise LcposeError(f"{cfg.config_file or 'config'}: [train]: {err}") from None


_TABLES: dict[str, type] = {
    "DataConfig": DataConfig,
    "StoreConfig": StoreConfig,
    "ProtocolConfig": ProtocolConfig,
    "EvalConfig": EvalConfig,
    "SweepConfig": SweepConfig,
}
"""Annotation (a string under `from __future__ import annotations`) -> table dataclass."""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise LcposeError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise LcposeError(f"{path}: not valid TOML ({err})") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` deep-merged onto `base` (tables merge key by key, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _raw(path: Path) -> dict[str, Any]:
    """A config file merged onto its `base` chain, untyped."""
    raw = _read_toml(path)
    base_name = raw.pop("base", None)
    return _merge(_raw(path.parent / base_name), raw) if base_name else raw


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a config file (and its `base` chain) into a complete, checked config.

    Paths stay as written; `resolve_path` makes them absolute (relative to the repo root).
    """
    path = Path(path)
    data = _raw(path)
    data["config_file"] = str(path.resolve())
    return ExperimentConfig.from_json(data, where=str(path))


def resolve_path(value: str) -> Path:
    """A config path: absolute as written, else relative to the repository root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else ROOT / path


# ---------------------------------------------------------------------------------------------
# The config an experiment folder was run with

RESOLVED = "experiment.json"
"""The resolved config of a run, written into OUT; child processes and the report read it."""


_MAY_CHANGE = (
    "parallel", "threads", "report_dir", "smoke_run", "results_dir", "sweep", "protocol", "seeds",
    "compare_with",
)  # fmt: skip
"""Config keys a folder's later runs may change: they add rows or change how steps run, not
what a finished step computed."""


def prepare_out(cfg: ExperimentConfig, out: Path) -> None:
    """Write the resolved config into OUT, refusing one whose protocol differs."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESOLVED
    body = {k: v for k, v in cfg.to_json().items() if k != "config_file"}
    if path.is_file():
        old = read_json(path)
        fixed = first_difference(old, body, [k for k in body if k not in _MAY_CHANGE])
        if fixed is not None:
            raise LcposeError(
                f"{path}: this folder holds runs of a different config (key {fixed!r} "
                f"differs); choose another --out"
            )
    write_json_atomic(path, {**body, "config_file": cfg.config_file})


def load_resolved(out: Path) -> ExperimentConfig:
    """The config an experiment folder was run with (`OUT/experiment.json`)."""
    path = out / RESOLVED
    if not path.is_file():
        raise LcposeError(f"{out}: no {RESOLVED} (not an experiment folder)")
    return ExperimentConfig.from_json(read_json(path), where=str(path))
