"""The two segmentation models, defined once, and their loading.

Both take (256, 256, 3) float32 in [0, 1] and return (256, 256, 2) softmax
probabilities (channel 0 background, channel 1 fracture). They are fully
convolutional, so they also run on other sizes divisible by 8 (U-Net: 16),
which training uses for 128-px crops.

Builders are pure functions (no file access); ``load_segmentation_model`` is the
only place that reads a model file, and it asks ``model_manifest`` (the owner of
``Saved_model/manifest.json`` and of the trust rule) before handing it to Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
from keras import layers

import utils  # noqa: F401  (registers the custom losses/metrics used by saved models)
from important_variables import CONFIG, MODEL_NAMES
from model_manifest import ModelIntegrityError, read_manifest, sha256_file, verify_model_file  # noqa: F401  (re-exported)

INPUT_SHAPE = (CONFIG.input_size, CONFIG.input_size, CONFIG.input_channels)

_CONV = dict(kernel_size=3, padding="same", activation="relu", kernel_initializer="he_normal")


def _double_conv(x, filters: int, dropout: float, name: str):
    """conv3x3 → dropout → conv3x3, ReLU, he_normal, 'same' padding."""
    x = layers.Conv2D(filters, name=f"{name}_conv1", **_CONV)(x)
    x = layers.Dropout(dropout, name=f"{name}_drop")(x)
    x = layers.Conv2D(filters, name=f"{name}_conv2", **_CONV)(x)
    return x


def _up(x, filters: int, name: str):
    return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_upconv")(x)


def _head(x):
    # float32 even under a mixed_bfloat16 policy, so that the loss sees float32
    # probabilities (and Keras can still reach the logits behind the softmax).
    return layers.Conv2D(CONFIG.num_classes, 1, activation="softmax", name="output", dtype="float32")(x)


def build_encoder_decoder(input_shape=INPUT_SHAPE) -> keras.Model:
    """Plain encoder-decoder without skip connections; 1,554,498 parameters at 256x256x3."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, (f, d) in enumerate([(16, 0.1), (32, 0.1), (128, 0.2)]):
        x = _double_conv(x, f, d, f"enc{i + 1}")
        x = layers.MaxPooling2D(2, name=f"enc{i + 1}_pool")(x)
    x = _double_conv(x, 256, 0.3, "bottleneck")
    for i, (f, d) in enumerate([(128, 0.2), (32, 0.1), (16, 0.1)]):
        x = _up(x, f, f"dec{i + 1}")
        x = _double_conv(x, f, d, f"dec{i + 1}")
    return keras.Model(inputs, _head(x), name="encoder_decoder")


def build_unet(input_shape=INPUT_SHAPE) -> keras.Model:
    """U-Net 16-32-64-128 / 256 bottleneck with skip concatenations; 1,941,122 parameters."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    skips = []
    for i, (f, d) in enumerate([(16, 0.1), (32, 0.1), (64, 0.2), (128, 0.2)]):
        x = _double_conv(x, f, d, f"enc{i + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{i + 1}_pool")(x)
    x = _double_conv(x, 256, 0.3, "bottleneck")
    for i, (f, d) in enumerate([(128, 0.2), (64, 0.2), (32, 0.1), (16, 0.1)]):
        x = _up(x, f, f"dec{i + 1}")
        x = layers.Concatenate(name=f"dec{i + 1}_concat")([x, skips[-(i + 1)]])
        x = _double_conv(x, f, d, f"dec{i + 1}")
    return keras.Model(inputs, _head(x), name="unet")


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "unet": build_unet,
    "encoder_decoder": build_encoder_decoder,
}
assert set(BUILDERS) == set(MODEL_NAMES)


def build_model(name: str, input_shape=INPUT_SHAPE) -> keras.Model:
    """Build the (untrained) model called ``name`` ('unet' or 'encoder_decoder')."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}") from None
    return builder(input_shape)


def variable_size_twin(model: keras.Model) -> keras.Model:
    """The same architecture with a size-free (None, None, 3) input, carrying ``model``'s weights.

    The shipped files keep the seed's 256x256x3 input (so ``keras.saving.load_model``
    returns the seed model); whole-image prediction at native scale runs this twin.
    """
    twin = build_model(model.name, input_shape=(None, None, CONFIG.input_channels))
    twin.set_weights(model.get_weights())
    return twin


def cpu_has_amx_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU advertises AMX bfloat16 tiles (``amx_bf16`` in /proc/cpuinfo)."""
    try:
        return "amx_bf16" in cpuinfo.read_text(errors="replace").split()
    except OSError:
        return False


def choose_precision(requested: str = "auto") -> str:
    """Keras dtype policy name: 'mixed_bfloat16' on AMX CPUs when ``requested`` is 'auto', else float32.

    On AMX, bf16 ran the U-Net 1.8x faster (training and inference); without AMX,
    bf16 is emulated and slower, so it is never assumed.
    """
    if requested == "auto":
        return "mixed_bfloat16" if cpu_has_amx_bf16() else "float32"
    return requested


def load_segmentation_model(
    path: Path | str,
    expected_sha256: str | None = None,
    compile: bool = False,
    allow_unverified: bool = False,
) -> keras.Model:
    """Load a ``.keras`` model in safe mode after :func:`model_manifest.verify_model_file`.

    The trust rule is the manifest's (one rule for every caller): the file must be
    listed with a matching SHA-256 in the ``manifest.json`` next to it, or match
    ``expected_sha256``; an unlisted file loads only with ``allow_unverified``.
    Raises :class:`ModelIntegrityError` with a one-line message.
    """
    path = Path(path)
    verify_model_file(path, allow_unverified=allow_unverified, expected_sha256=expected_sha256)
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # a corrupt zip, a foreign file: one line, not a traceback
        raise ModelIntegrityError(f"{path.name}: cannot be loaded as a Keras model ({type(exc).__name__}: {exc})".splitlines()[0]) from exc


def load_named_model(name: str, compile: bool = False) -> keras.Model:
    """Load the shipped model ``name`` from ``Saved_model/``, verified against the manifest."""
    return load_segmentation_model(CONFIG.model_path(name), compile=compile)
