"""One source of settings: paths (relative to the repository root) and constants.

Nothing here touches the file system or the environment at import time; the
functions that do (``resolve_data_dir``) run only when called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

REPO_ROOT = Path(__file__).resolve().parent

#: Names of the shipped models, as used on the command line and in file names.
MODEL_NAMES: tuple[str, ...] = ("unet", "encoder_decoder", "lite0_unet", "ensemble")
#: The models with training of their own (``train.py``); the ensemble is written from them.
TRAINED_MODELS: tuple[str, ...] = ("unet", "encoder_decoder", "lite0_unet")
#: Every net ``train.py`` can build and train: the shipped ones and those measured but not shipped
#: (the Lite2-UNet: docs/experiments.md).
ARCHITECTURES: tuple[str, ...] = (*TRAINED_MODELS, "lite2_unet")
#: The ensemble's members and their weights in its average of the members' softmax maps
#: (chosen on FracAtlas valid among multiples of 0.25: docs/experiments.md). It has no training of its
#: own: ``tools/build_ensemble.py`` writes it from the shipped members' files.
ENSEMBLE_MEMBERS: Mapping[str, float] = MappingProxyType({"lite0_unet": 0.75, "encoder_decoder": 0.25})
#: The model the app's dashboard and predict.py start with: the one that wins on valid.
DEFAULT_MODEL = "ensemble"
#: Whole-image prediction pads each side to a multiple of 2 ** (stride-2 steps of the net);
#: a model not listed uses ``CONFIG.pad_multiple``.
#: The encoder-decoder would need 8, but its valid choice and test metrics were made at 16: kept.
PAD_MULTIPLES: Mapping[str, int] = MappingProxyType({"unet": 16, "encoder_decoder": 16, "lite0_unet": 32, "lite2_unet": 32, "ensemble": 32})

#: Human labels for the UI, keyed by model name.
MODEL_LABELS: Mapping[str, str] = MappingProxyType(
    {"unet": "U-Net", "encoder_decoder": "Simple encoder-decoder", "lite0_unet": "Lite0-UNet (ImageNet encoder)",
     "lite2_unet": "Lite2-UNet (ImageNet encoder)",
     "ensemble": "Ensemble (Lite0-UNet + encoder-decoder)"}
)


@dataclass(frozen=True)
class Config:
    """Frozen project settings. All paths are absolute, derived from the repo root."""

    repo_root: Path = REPO_ROOT
    saved_model_dir: Path = REPO_ROOT / "Saved_model"
    style_dir: Path = REPO_ROOT / "style"
    assets_dir: Path = REPO_ROOT / "assets"
    cache_dir: Path = REPO_ROOT / ".cache"
    checkpoint_dir: Path = REPO_ROOT / "checkpoints"
    reports_dir: Path = REPO_ROOT / "reports"

    #: Data set search order after --data and $FRACATLAS_DIR.
    default_data_dirs: tuple[Path, ...] = (
        REPO_ROOT / "fracture" / "FracAtlas",
        REPO_ROOT.parent / "shared" / "data" / "FracAtlas",
    )
    data_env_var: str = "FRACATLAS_DIR"
    #: The second training source (``fracture.bone_fracture_yolo8``): --yolo8-data, then this
    #: variable, then these folders.
    yolo8_env_var: str = "BONEFRACTURE_YOLO8_DIR"
    yolo8_default_dirs: tuple[Path, ...] = (
        REPO_ROOT / "fracture" / "BoneFractureYolo8",
        REPO_ROOT.parent / "shared" / "data" / "BoneFractureYolo8",
    )

    #: Model input: height, width, channels. Output: same H, W and 2 classes
    #: (0 = background, 1 = fracture), softmax.
    input_size: int = 256
    input_channels: int = 3
    num_classes: int = 2
    fracture_channel: int = 1

    #: Native pixel scale: images whose long side exceeds this are shrunk to it before
    #: training and prediction (most FracAtlas X-rays are 373x454 already), and the
    #: fully convolutional nets run on the whole image padded to a multiple of
    #: ``pad_multiple`` (the U-Net pools 4 times: 2**4).
    native_long_side: int = 454
    pad_multiple: int = 16

    #: Threshold used when the manifest has none (the manifest's is chosen on valid).
    default_threshold: float = 0.5
    #: An image without a finding whose top score is >= threshold - margin is
    #: "borderline" (shown as "review this area", never as all-clear). The manifest's
    #: ``borderline_margin``, chosen on valid, wins; this is the fallback.
    default_borderline_margin: float = 0.15
    #: The margin chosen on valid is the widest whose borderline band holds at most this
    #: share of the valid negatives (a "review this area" on every other healthy X-ray
    #: would teach users to ignore it).
    borderline_max_negative_share: float = 0.10
    #: Findings smaller than this many pixels *at model resolution* are noise.
    min_finding_area_px: int = 4
    #: Pixels averaged by the ``topk_mean`` image score (``inference.findings.FindingRule.topk_px``) and by
    #: the image-level term of the training loss (``utils.ce_dice_topk_loss``): training sharpens
    #: what is scored.
    image_score_topk_px: int = 64
    #: Weight of the teacher's soft cross-entropy beside the label loss in ``utils.ce_dice_distill_loss``
    #: (``train.py --teacher``): 1 = as much as the labels' cross-entropy.
    distill_weight: float = 1.0

    #: Uploads and decoding limits.
    max_upload_mb: int = 50
    max_image_pixels: int = 60_000_000  # refuse before decoding above this
    min_image_side: int = 16

    image_extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".dcm")
    #: What ``predict.py`` takes from a folder: every format the decoder reads.
    folder_extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".dcm", ".bmp", ".webp", ".tif", ".tiff", ".gif")

    seed: int = 1337
    model_files: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({n: f"{n}.keras" for n in (*MODEL_NAMES, *ARCHITECTURES)})
    )

    @property
    def manifest_path(self) -> Path:
        return self.saved_model_dir / "manifest.json"

    def model_path(self, name: str) -> Path:
        """Path of the shipped ``.keras`` file for model ``name``."""
        if name not in self.model_files:
            raise ValueError(f"unknown model {name!r}; expected one of {', '.join(self.model_files)}")
        return self.saved_model_dir / self.model_files[name]

    def metrics_path(self, name: str) -> Path:
        return self.saved_model_dir / f"{name}.metrics.json"

    @property
    def report_dir(self) -> Path:
        return self.saved_model_dir / "report"


CONFIG = Config()


def is_fracatlas_dir(path: Path | None) -> bool:
    """True when ``path`` looks like a FracAtlas directory (it holds ``dataset.csv``)."""
    return path is not None and (Path(path) / "dataset.csv").is_file()


def is_yolo8_dir(path: Path | None) -> bool:
    """True when ``path`` looks like the BoneFractureYolo8 export (``data.yaml`` and ``train/labels``)."""
    return path is not None and (Path(path) / "data.yaml").is_file() and (Path(path) / "train" / "labels").is_dir()


def _resolve_dir(cli_value, env_var: str, defaults: tuple[Path, ...], looks_right) -> Path | None:
    """The option, then ``$env_var``, then the first default that ``looks_right``; None when nothing is found.

    An explicitly given path is returned even if missing, so the caller can say so.
    """
    if cli_value:
        return Path(cli_value).expanduser().resolve()
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser().resolve()
    return next((c.resolve() for c in defaults if looks_right(c)), None)


def resolve_data_dir(cli_value: str | os.PathLike | None = None) -> Path | None:
    """Find the FracAtlas directory: ``--data``, then ``$FRACATLAS_DIR``, then defaults.

    Returns None when nothing is found (callers decide whether that is an error).
    An explicitly given path is returned even if missing, so the caller can say so.
    """
    return _resolve_dir(cli_value, CONFIG.data_env_var, CONFIG.default_data_dirs, is_fracatlas_dir)


def resolve_yolo8_dir(cli_value: str | os.PathLike | None = None) -> Path | None:
    """Find the BoneFractureYolo8 directory: the option, then ``$BONEFRACTURE_YOLO8_DIR``, then defaults.

    Same rules as :func:`resolve_data_dir`.
    """
    return _resolve_dir(cli_value, CONFIG.yolo8_env_var, CONFIG.yolo8_default_dirs, is_yolo8_dir)
