"""The run config: one dataclass per section, a comment per field.

Layers, later wins: the dataclass defaults, YAML files (``--config``; a preset name from
``fuse/configs/`` or a path), the command-line options, then ``key=value`` overrides
(``train.lr=1e-4 model.encoder.layers=2``). :func:`build_config` returns the config and every
type problem found, so validation can report them together with the semantic ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

PRESET_DIR = Path(__file__).parent / "configs"
WINDOWS = (1, 5, 10, 20, 30, 50, 75, 100)  # smoothing windows tried on val (004: 20, 50)


@dataclass
class DataConfig:
    """Which features, how they reach the label grid, and how they are cut into segments."""

    stores: list[str] = field(default_factory=list)  # feature stores; a feature is read from
    #                                                   the first store that holds it
    visual: list[str] = field(default_factory=list)  # visual features: "name" or "name:method"
    audio: list[str] = field(default_factory=list)  # audio features: "name" or "name:method"
    align: str = "auto"  # default way onto the grid: nearest row | mean of the rows in a step;
    #                      auto = nearest for per-frame labels, mean for per-video labels (so a
    #                      per-clip grid pools every row of the clip instead of sampling some)
    align_tolerance: float = 0.5  # a grid step with no row of the feature within this many
    #   of the feature's own row steps is invalid (gaps, before the first / after the last row)
    fill: str = "nearest"  # invalid steps (no face, no audio): nearest | hold | zero
    mask_channels: bool = True  # give the model one validity channel per feature
    grid: str = "auto"  # auto | labels (label rows' times) | rate:HZ | steps:N (per-video labels)
    drop_missing: bool = False  # drop labelled videos that lack a feature instead of failing
    segment_len: int = 100  # steps per training segment (002/004: LSTM 100, transformer 128-250)
    segment_stride: int = 0  # transformer: step between segment starts (<= segment_len);
    #                          0 = segment_len. RNNs that carry state use segment_len (no overlap)
    device_cache: bool = True  # on CUDA, keep the whole feature buffer in GPU memory
    normalize: str = "global"  # z-scores: global (training videos' valid rows) | group (each
    #                            group's own videos, all splits: features only, never labels;
    #                            per speaker with labels.group_by=speaker) | none
    bucket: bool = True  # per-video batches: videos of similar length together (less padding)


@dataclass
class LabelConfig:
    """Where the labels are, their layout, and how videos are split."""

    path: str = ""  # label file or folder (layouts: data/labels/README.md)
    format: str = ""  # adapter: affwild2-va | affwild2-expr | affwild2-au | hume | csv
    partition: str = ""  # CSV with a video / File_ID column and a Split column; "" = none
    make_splits: bool = False  # ignore the splits the labels give and make grouped ones
    val_fraction: float = 0.2  # made splits: share of groups for validation
    test_fraction: float = 0.0  # made splits: share of groups held out as test
    folds: int | str = 0  # k folds over groups, or loso (one fold per group); 0 = no folds
    fold: int = 0  # with folds: the held-out fold (loso: the index among the sorted groups)
    fold_holdout: str = "test"  # with folds: test = the held-out fold is the test split and
    #   validation (epoch selection, early stop, post tuning) is drawn from the other groups by
    #   val_fraction (nested; no selection ever sees the held-out fold); val = the held-out fold
    #   is the validation split and the labels' test videos stay test (papers 002 / 004)
    official_val_fold: bool = False  # fold_holdout=val: the labels' own val split is the last
    #                                  fold, their train videos make the others (papers 002/004)
    split_seed: int = 0  # made splits: seed of the group shuffle
    group_by: str = ""  # made splits and folds group by: a label column naming the speaker /
    #                     subject, or "video"; "" = the label format's own groups (Aff-Wild2:
    #                     X_left / X_right with X), else each video alone
    fps: float = 0.0  # per-frame labels: frame i at i / fps; 0 = the video's own frame times
    #                   (recorded by the reference feature, see data/labels/README.md)
    time_reference: str = ""  # feature that records the video's frame times; "" = first visual
    frame_tolerance: int = 5  # annotation lines allowed past the video's last frame (ignored)
    video_map: str = ""  # CSV label video id → feature video id (columns video, feature_video,
    #                      optional applies_to: a feature name, visual or audio); "" = none
    video_column: str = "video"  # csv: video id column
    frame_column: str = "frame"  # csv: frame index column (per-frame labels), used if present
    time_column: str = "time"  # csv: time column in seconds (per-frame labels), used if present
    split_column: str = "split"  # csv: split column, used if present
    targets: list[str] = field(default_factory=list)  # csv: target columns; [] = the rest
    classes: list[str] = field(default_factory=list)  # csv classification: class names
    train_val_mix: bool = False  # Train-Val-Mix (002 / 004): val videos join training; no
    #                              validation score, no early stop; needs train.snapshot_epochs


@dataclass
class TaskConfig:
    """What is predicted and how it is scored."""

    name: str = "va"  # va | expr | au | eri | regression | classification
    loss: str = "auto"  # regression: mse | ccc; auto = the task's own (va: ccc, eri: mse)
    metric: str = "auto"  # regression: pearson | ccc; classification: f1 (macro) | uar
    #                       (unweighted average recall) | accuracy; auto = the task's own
    focal_gamma: float = 0.0  # classification: focal-loss gamma (0 = cross-entropy)
    focal_alpha: list[float] = field(default_factory=list)  # classification: alpha_t per class
    #   (paper 001 eq. 9), one weight per class in class order; [] = all 1
    rdrop_alpha: float = 0.0  # classification: R-Drop KL weight (paper 002: 5); 0 = off
    aux_weight: float = 0.0  # eri: weight of the CE on the argmax emotion (paper 001: 0.01)


@dataclass
class EncoderConfig:
    """The temporal encoder; fields marked rnn / transformer apply to those only."""

    name: str = "lstm"  # lstm | gru | transformer | identity (per-frame, no context); classic
    #                     (scikit-learn, fitted in closed form): svm | logreg | ridge
    hidden: int = 512  # rnn: hidden size per direction; transformer: model width
    layers: int = 1  # stacked layers
    dropout: float = 0.3  # between rnn layers; inside transformer blocks
    bidirectional: bool = False  # rnn: both directions (then no state carry)
    carry_state: bool = True  # rnn: hidden state carried between consecutive segments (004)
    heads: int = 4  # transformer: attention heads
    ff_dim: int = 1024  # transformer: feed-forward width
    pos_encoding: str = "sinusoidal"  # transformer: sinusoidal | learned | none
    max_len: int = 1024  # transformer with learned positions: the longest segment


@dataclass
class ClassicConfig:
    """Classic baselines (``model.encoder.name`` svm | logreg | ridge) on pooled features."""

    c: float = 1.0  # svm / logreg: inverse regularisation strength C
    alpha: float = 1.0  # ridge: L2 penalty
    max_iter: int = 5000  # solver iterations (svm / logreg)


@dataclass
class ModelConfig:
    """Projection, fusion, temporal encoder, head."""

    proj_dim: int = 0  # per-feature projection width before fusion; 0 = none
    fusion_dim: int = 512  # output of the FC over the concatenated features (004 eq. 1)
    dropout: float = 0.3  # after fusion and in the head blocks
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head: list[int] = field(default_factory=lambda: [512, 256])  # {FC, Dropout, ReLU} widths
    pool: str = "mean"  # per-video tasks: mean | mean_std (statistics pooling) | attention |
    #                     attentive_stats (attentive statistics pooling); classic: mean | mean_std
    classic: ClassicConfig = field(default_factory=ClassicConfig)


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpoints."""

    epochs: int = 30  # maximum epochs
    batch_size: int = 16  # segments (or videos) per step
    optimizer: str = "adam"  # adam | adamw
    lr: float = 3e-4  # peak learning rate (004 LSTM 3e-4, transformer 2e-4; 001 1e-4)
    weight_decay: float = 0.0  # L2 (adam) or decoupled (adamw) weight decay
    scheduler: str = "constant"  # constant | cosine | step (all after the warmup)
    warmup_epochs: float = 0.0  # linear warmup length in epochs (fractions allowed)
    step_epochs: int = 10  # step schedule: epochs between decays
    step_gamma: float = 0.5  # step schedule: decay factor
    min_lr_ratio: float = 0.0  # cosine: final lr as a fraction of lr
    ema_decay: float = 0.0  # EMA of the weights used for eval and best.pt (001: 0.99); 0 = off
    grad_clip: float = 0.0  # max gradient norm (001: 0.1); 0 = off
    patience: int = 0  # early stop after this many epochs without a better val score; 0 = off
    seed: int = 0  # seeds torch, numpy and the epoch shuffles (splits: labels.split_seed)
    deterministic: bool = True  # torch deterministic algorithms (full determinism on CPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    threads: int = 0  # torch CPU threads; 0 = torch's default
    snapshot_epochs: list[int] = field(default_factory=list)  # [first, last] epochs (1-based,
    #   inclusive) kept as snapshots whose outputs are combined (004: 16-25 arousal, 11-16
    #   valence); training stops after last; only with labels.train_val_mix; [] = none
    snapshot_combine: str = "auto"  # snapshots' outputs: auto | mean | prob_mean | vote
    #                                 (auto: mean for values, vote for classes, prob_mean AUs)
    snapshot_targets: dict[str, list[int]] = field(default_factory=dict)  # per-target windows
    #   {target: [first, last]} (004: arousal [16, 25], valence [11, 16]); targets not named
    #   use snapshot_epochs; regression / AU tasks (one output column per target)
    class_weights: str = "none"  # classification loss: none | balanced (N / (C * n_c) from the
    #                              training split's counts)
    keep: str = "last"  # checkpoints left when the run ends: last (best.pt + last.pt, resumable)
    #                     | best (best.pt: eval / predict still work) | none (outputs only)
    keep_snapshots: bool = True  # Train-Val-Mix: keep snapshots/epoch_NNN.pt (their outputs
    #                              are kept either way); predict / eval need them


@dataclass
class PostConfig:
    """Post-processing of predictions, tuned on the validation split."""

    clip: str = "auto"  # auto (the task's range) | none | "LO,HI"
    smooth: bool = True  # centred moving average on per-frame outputs, window chosen on val
    windows: list[int] = field(default_factory=lambda: list(WINDOWS))  # candidates; 1 = off
    tune_thresholds: bool = True  # au: per-AU decision thresholds chosen on val (else 0.5)


@dataclass
class OutputConfig:
    """What a run writes besides checkpoints and logs."""

    dir: str = ""  # run directory (--out)
    predict_splits: list[str] = field(default_factory=lambda: ["val", "test"])  # written
    plots: bool = True  # learning curves, per-target bars, confusion matrix


@dataclass
class FuseConfig:
    """A whole run."""

    data: DataConfig = field(default_factory=DataConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    post: PostConfig = field(default_factory=PostConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------- building
def build_config(*layers: dict[str, Any] | None) -> tuple[FuseConfig, list[str]]:
    """Merge dict layers (later wins) onto the defaults; return the config and type problems."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged = deep_merge(merged, layer)
    problems: list[str] = []
    cfg = _from_dict(FuseConfig, merged, "", problems)
    return cfg, problems


def config_from_dict(data: dict[str, Any]) -> FuseConfig:
    """A config from a resolved dict (e.g. a run's config.yaml); raises on any problem."""
    from fuse.errors import ConfigError

    cfg, problems = build_config(data)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_yaml(name_or_path: str) -> dict[str, Any]:
    """A YAML config file, or a preset name from ``fuse/configs`` (``va_lstm``)."""
    from fuse.errors import ConfigError

    path = Path(name_or_path)
    if not path.is_file():
        preset = PRESET_DIR / f"{name_or_path}.yaml"
        if not preset.is_file():
            known = ", ".join(presets()) or "(none)"
            raise ConfigError(f"config {name_or_path!r} is neither a file nor a preset; "
                              f"presets: {known}")
        path = preset
    data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping, not {type(data).__name__}")
    return data


def read_yaml_file(path: str | Path) -> Any:
    """A YAML file's content; one problem naming the file, line and column when it does not
    parse (:class:`fuse.errors.ConfigError`)."""
    from extract.catalog import read_yaml
    from extract.errors import ConfigError as ExtractConfigError
    from fuse.errors import ConfigError

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        return read_yaml(path)
    except ExtractConfigError as exc:
        raise ConfigError(str(exc)) from None


def presets() -> list[str]:
    """Names of the shipped preset configs."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def parse_overrides(items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``["train.lr=1e-4", "data.visual=a,b"]`` → nested dict of strings, plus problems."""
    out: dict[str, Any] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            problems.append(f"override {item!r}: use key=value, e.g. train.lr=1e-4")
            continue
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                problems.append(f"override {item!r}: {p!r} is set twice")
                break
        else:
            node[leaf] = value.strip()
    return out, problems


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``update`` merged into ``base`` recursively (mappings merge, others replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def save_config(cfg: FuseConfig, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _from_dict(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from ``data``, coercing strings; unknown keys become problems."""
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
        data = {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            problems.append(f"{prefix}{key}: unknown key in [{prefix.rstrip('.') or 'top'}]"
                            f" (known: {', '.join(names)}){hint}")
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, f"{prefix}{key}.", problems)
            continue
        try:
            kwargs[key] = _coerce(value, hint)
        except (TypeError, ValueError) as exc:
            problems.append(f"{prefix}{key}: {exc}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (int, float, bool, str, list[...], optional)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)) and (value is None or (
                isinstance(value, str) and value.lower() in ("none", "null"))):
            return None
        for arg in args[:-1]:  # the first type that takes the value (int | str: 5 or "loso")
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                pass
        return _coerce(value, args[-1])
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {value!r}")
        return {_coerce(k, key_type): _coerce(v, value_type) for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = _split_list(value)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        return [_coerce(v, item) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise TypeError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError(f"expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise TypeError(f"expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise TypeError(f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise TypeError(f"expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def _split_list(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [part.strip().strip("'\"") for part in text.split(",") if part.strip()]
