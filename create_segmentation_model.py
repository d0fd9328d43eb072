"""The segmentation models, each defined once, and their loading.

All take (256, 256, 3) float32 in [0, 1] and return (256, 256, 2) softmax
probabilities (channel 0 background, channel 1 fracture). They are fully
convolutional, so they also run on other sizes divisible by
``important_variables.PAD_MULTIPLES[name]`` (16 for the two seed models, 32 for the Lite-UNets).

- ``encoder_decoder`` and ``unet``: the two seed designs (exact layer stacks).
- ``lite0_unet``: a U-Net decoder on an EfficientNet-Lite0 encoder (EfficientNet-B0
  without squeeze-excitation, ReLU6, BN eps 1e-3), whose encoder can start from
  ImageNet weights (``training.pretrained.efficientnet_lite``). Its layers are named so that
  each maps to one entry of the reference PyTorch state dict.
- ``lite2_unet``: the same on the wider, deeper EfficientNet-Lite2 encoder (trainable, not shipped).
- ``ensemble``: the members of ``important_variables.ENSEMBLE_MEMBERS`` side by side on one
  input, their softmax maps averaged with those weights; not trained, written from the
  shipped members by ``tools/build_ensemble.py``.

Builders are pure functions (no file access); ``load_segmentation_model`` is the
only place that reads a model file, and it asks ``inference.manifest`` (the owner of
``Saved_model/manifest.json`` and of the trust rule) before handing it to Keras.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from types import MappingProxyType

import keras
from keras import layers

import utils  # noqa: F401  (registers the custom losses/metrics used by saved models)
from important_variables import ARCHITECTURES, CONFIG, ENSEMBLE_MEMBERS, MODEL_NAMES, PAD_MULTIPLES
from inference.manifest import (  # noqa: F401  (re-exported)
    BF16_INFERENCE_TOLERANCE,
    ModelIntegrityError,
    bf16_check_allows,
    bf16_check_refusal,
    read_manifest,
    sha256_file,
    verify_model_file,
)

INPUT_SHAPE = (CONFIG.input_size, CONFIG.input_size, CONFIG.input_channels)

_CONV = dict(kernel_size=3, padding="same", activation="relu", kernel_initializer="he_normal")

log = logging.getLogger(__name__)


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


#: EfficientNet-Lite stages per encoder variant: (expand ratio, kernel, stride, output channels, repeats).
#: Lite2 is Lite0 at 1.1x width and 1.2x depth (channels rounded to multiples of 8), its stem
#: and first and last stages unscaled, as in the reference weights' state dicts.
LITE_STAGES: Mapping[str, tuple[tuple[int, int, int, int, int], ...]] = MappingProxyType({
    "lite0": ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)),
    "lite2": ((1, 3, 1, 16, 1), (6, 3, 2, 24, 3), (6, 5, 2, 48, 3), (6, 3, 2, 88, 4),
              (6, 5, 1, 120, 4), (6, 5, 2, 208, 5), (6, 3, 1, 352, 1)),
})
LITE_STEM_FILTERS = 32
#: Decoder widths, deepest first; the last stage runs at full resolution without a skip.
LITE_DECODER_FILTERS = (128, 64, 32, 16, 16)
_BN = dict(epsilon=1e-3, momentum=0.99)


def lite_skip_blocks(variant: str) -> tuple[int, ...]:
    """Blocks whose outputs are the U-Net skips at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input:
    the last block before each stride-2 stage, and the last block (Lite0: 0, 2, 4, 10, 15)."""
    stages = LITE_STAGES[variant]
    ends = [total - 1 for total in accumulate(repeats for *_, repeats in stages)]  # each stage's last block
    return tuple(end for end, following in zip(ends[:-1], stages[1:], strict=True) if following[2] == 2) + (ends[-1],)


def _lite_conv(x, filters: int, kernel: int, stride: int, name: str, depthwise: bool = False):
    """Conv (or depthwise conv) without bias, PyTorch-style symmetric zero padding of kernel // 2.

    Keras' 'same' pads stride-2 convs asymmetrically; the reference weights were trained
    with symmetric padding, and the port matches it so that ImageNet features carry over.
    """
    if kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    if depthwise:
        return layers.DepthwiseConv2D(kernel, strides=stride, padding="valid", use_bias=False, name=name)(x)
    return layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=False, name=name)(x)


def _bn_relu6(x, name: str, act: bool = True):
    x = layers.BatchNormalization(name=f"{name}_bn", **_BN)(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if act else x


def lite_encoder(x, variant: str = "lite0"):
    """EfficientNet-Lite feature extractor (``LITE_STAGES[variant]``) on ``x`` (already normalised to about [-1, 1]).

    Returns the outputs of :func:`lite_skip_blocks` (Lite0: 16, 24, 40, 112, 320 channels;
    Lite2: 16, 24, 48, 120, 352; at 1/2 ... 1/32 of the input). Layer names: ``stem``,
    ``block{N}_expand``, ``block{N}_dw``, ``block{N}_project`` (+ ``_bn``), N in the reference order.
    """
    skip_blocks = lite_skip_blocks(variant)
    x = _bn_relu6(_lite_conv(x, LITE_STEM_FILTERS, 3, 2, "stem"), "stem")
    skips, n, channels = [], 0, LITE_STEM_FILTERS
    for expand, kernel, stride, out, repeats in LITE_STAGES[variant]:
        for r in range(repeats):
            s = stride if r == 0 else 1
            name = f"block{n}"
            h = x
            if expand != 1:
                h = _bn_relu6(_lite_conv(h, channels * expand, 1, 1, f"{name}_expand"), f"{name}_expand")
            h = _bn_relu6(_lite_conv(h, 0, kernel, s, f"{name}_dw", depthwise=True), f"{name}_dw")
            h = _bn_relu6(_lite_conv(h, out, 1, 1, f"{name}_project"), f"{name}_project", act=False)
            if s == 1 and channels == out:
                h = layers.Add(name=f"{name}_add")([x, h])
            x, channels = h, out
            if n in skip_blocks:
                skips.append(x)
            n += 1
    return skips


def lite_normalise(inputs):
    """[0, 1] model input → (x·255 − 127) / 128, the range the ImageNet weights were trained on."""
    return layers.Rescaling(255.0 / 128.0, offset=-127.0 / 128.0, name="imagenet_norm")(inputs)


def _lite_decoder_stage(x, filters: int, name: str):
    for j in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv{j}")(x)
        x = layers.BatchNormalization(name=f"{name}_conv{j}_bn", **_BN)(x)
        x = layers.ReLU(name=f"{name}_conv{j}_relu")(x)
    return x


def build_lite_unet(input_shape=INPUT_SHAPE, variant: str = "lite0") -> keras.Model:
    """U-Net decoder on an EfficientNet-Lite encoder (``variant``: lite0 or lite2), input a multiple of 32.

    Decoder: nearest 2x upsampling (bilinear does not trace with a size-free input), concat
    with the skip of that scale, two 3x3 conv/BN/ReLU; widths ``LITE_DECODER_FILTERS``; the
    last stage reaches full resolution without a skip; 1x1 softmax head (float32).
    Named ``{variant}_unet``.
    """
    inputs = keras.Input(input_shape, name="image")
    skips = lite_encoder(lite_normalise(inputs), variant)
    x = skips[-1]
    for i, f in enumerate(LITE_DECODER_FILTERS):
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"dec{i + 1}_up")(x)
        if i + 2 <= len(skips):
            x = layers.Concatenate(name=f"dec{i + 1}_concat")([x, skips[-(i + 2)]])
        x = _lite_decoder_stage(x, f, f"dec{i + 1}")
    return keras.Model(inputs, _head(x), name=f"{variant}_unet")


def build_lite0_unet(input_shape=INPUT_SHAPE) -> keras.Model:
    """The Lite0-UNet: :func:`build_lite_unet` on EfficientNet-Lite0; 3,8xx,xxx parameters."""
    return build_lite_unet(input_shape, "lite0")


def build_lite2_unet(input_shape=INPUT_SHAPE) -> keras.Model:
    """The Lite2-UNet: :func:`build_lite_unet` on EfficientNet-Lite2 (wider and deeper encoder)."""
    return build_lite_unet(input_shape, "lite2")


def member_prefix(member: str) -> str:
    """The prefix of a member's layer names inside the ensemble (the members share names such as ``dec1_conv1``)."""
    return f"{member}__"


def _renamed(prefix: str) -> Callable[[layers.Layer], layers.Layer]:
    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "name": prefix + layer.name})
    return clone


def build_ensemble(input_shape=INPUT_SHAPE) -> keras.Model:
    """The members of ``ENSEMBLE_MEMBERS`` on one input, output ``sum(weight * member softmax)``: (H, W, 2), float32,
    still a softmax (the weights sum to 1). One flat graph (each member's layers under
    :func:`member_prefix`), so batch-norm folding, the precision twin and the feature layer of the
    "unlike the training images" check see every layer; parameters: the members' sum.
    """
    inputs = keras.Input(input_shape, name="image")
    parts = []
    for member, weight in ENSEMBLE_MEMBERS.items():
        prefix = member_prefix(member)
        net = keras.models.clone_model(BUILDERS[member](input_shape), input_tensors=inputs, clone_function=_renamed(prefix))
        parts.append(layers.Rescaling(weight, name=f"{prefix}weight", dtype="float32")(net.output))
    return keras.Model(inputs, layers.Add(name="output", dtype="float32")(parts), name="ensemble")


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "unet": build_unet,
    "encoder_decoder": build_encoder_decoder,
    "lite0_unet": build_lite0_unet,
    "lite2_unet": build_lite2_unet,
    "ensemble": build_ensemble,
}
assert set(BUILDERS) == {*ARCHITECTURES, "ensemble"} == set(PAD_MULTIPLES) and set(MODEL_NAMES) <= set(BUILDERS)


def build_model(name: str, input_shape=INPUT_SHAPE) -> keras.Model:
    """Build the (untrained) model called ``name`` (one of ``ARCHITECTURES`` or ``ensemble``)."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(BUILDERS)}") from None
    return builder(input_shape)


def variable_size_twin(model: keras.Model) -> keras.Model:
    """The same architecture with a size-free (None, None, 3) input, carrying ``model``'s weights.

    The shipped files keep the seed's 256x256x3 input (so ``keras.saving.load_model``
    returns the seed model); whole-image prediction at native scale runs this twin.
    """
    twin = build_model(model.name, input_shape=(None, None, CONFIG.input_channels))
    twin.set_weights(model.get_weights())
    return twin


class FoldedAway(layers.Layer):
    """Stands where :func:`fold_batch_norms` folded a BatchNormalization into the conv before it:
    passes its input through, under the BatchNormalization's name (so layer lookups by name,
    such as the OOD check's feature layer, find the same tensor)."""

    def call(self, x, training=None, mask=None):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


def _foldable_pairs(model: keras.Model) -> dict[str, str]:
    """{conv layer name: BatchNormalization name} for each BN whose input is a Conv2D or DepthwiseConv2D
    without activation that feeds nothing else (the only case where folding is exact)."""
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, layers.BatchNormalization) or bn.axis not in (-1, 3, [-1], [3]):
            continue
        conv = bn.input._keras_history.operation
        if (isinstance(conv, (layers.Conv2D, layers.DepthwiseConv2D)) and not isinstance(conv, layers.Conv2DTranspose)
                and conv.get_config().get("activation") in (None, "linear") and len(conv._outbound_nodes) == 1):
            pairs[conv.name] = bn.name
    return pairs


def _folded_weights(conv, bn) -> list:
    """[kernel, bias] of ``conv`` followed by inference-mode ``bn``: scale s = gamma / sqrt(var + eps)
    on the output channel, bias (b - mean) * s + beta."""
    import numpy as np

    mean = np.asarray(bn.moving_mean, np.float64)
    s = (np.asarray(bn.gamma, np.float64) if bn.scale else 1.0) / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
    beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
    kernel = np.asarray(conv.kernel, np.float64)
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros_like(mean)
    # Conv2D kernel (kh, kw, in, out): out is the last axis; DepthwiseConv2D (kh, kw, C, 1): C is axis 2.
    shape = (1, 1, -1, 1) if isinstance(conv, layers.DepthwiseConv2D) else (1, 1, 1, -1)
    return [(kernel * s.reshape(shape)).astype(np.float32), ((bias - mean) * s + beta).astype(np.float32)]


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """An inference twin of ``model`` (any functional Keras model) with each foldable BatchNormalization
    merged into the conv before it (``_foldable_pairs``): the same outputs within float32 round-off
    (tests: 1e-5), two element-wise passes fewer per such layer. ``model`` itself when none is foldable.

    Why: Keras computes an inference BatchNormalization as a multiply and an add over the whole
    activation tensor, which TensorFlow does not fold into a convolution whose weights are variables;
    on a 2-core CPU folding made the Lite0-UNet's native-scale forward about a sixth faster.
    The twin copies the weights: it is for inference, never for a model that is still training.
    """
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    folded = set(pairs.values())

    def clone(layer):
        if layer.name in folded:
            return FoldedAway(name=layer.name, dtype=layer.dtype_policy.name)
        config = layer.get_config()
        return layer.__class__.from_config({**config, "use_bias": True} if layer.name in pairs else config)

    twin = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in folded:
            continue
        target = twin.get_layer(layer.name)
        target.set_weights(_folded_weights(layer, model.get_layer(pairs[layer.name])) if layer.name in pairs
                           else layer.get_weights())
    return twin


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The native bfloat16 instruction sets the CPU advertises: a subset of {'amx_bf16', 'avx512_bf16'}."""
    try:
        flags = set(cpuinfo.read_text(errors="replace").split())
    except OSError:
        return set()
    return flags & {"amx_bf16", "avx512_bf16"}


def cpu_has_amx_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU advertises AMX bfloat16 tiles (``amx_bf16`` in /proc/cpuinfo)."""
    return "amx_bf16" in cpu_bf16_flags(cpuinfo)


def time_train_step(name: str, policy: str, *, batch: int, side: int = CONFIG.input_size, steps: int = 3) -> float:
    """Seconds per training step of architecture ``name`` under Keras dtype ``policy`` at ``batch`` crops (after one warm-up step).

    Random inputs, the default loss; the global policy is restored afterwards.
    """
    import time

    import numpy as np

    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(name, input_shape=(None, None, CONFIG.input_channels))
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        rng = np.random.default_rng(0)
        x = rng.random((batch, side, side, CONFIG.input_channels), dtype=np.float32)
        y = np.zeros((batch, side, side, CONFIG.num_classes), np.float32)
        y[..., 0] = 1.0
        model.train_on_batch(x, y)
        t0 = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        return (time.perf_counter() - t0) / steps
    finally:
        keras.mixed_precision.set_global_policy(before)


#: bf16 is chosen only when it is at least this much faster than float32 in the start-up measurement.
BF16_MIN_SPEEDUP = 1.1


def choose_precision(requested: str = "auto", name: str | None = None, timer=time_train_step, batch: int = 8) -> str:
    """Keras dtype policy name for training: ``requested`` unless it is 'auto'.

    'auto': a CPU without native bf16 instructions (no ``amx_bf16``, no ``avx512_bf16``) emulates
    bf16, which is slower, so float32 without measuring. With them and an architecture ``name``,
    a short measurement decides (``timer(name, policy)``: seconds per step; bf16 must be
    ``BF16_MIN_SPEEDUP`` x faster, at the training ``batch``; both timings are logged): bf16 ran the
    seed U-Net 1.6x faster on an AVX512-BF16 CPU but the Lite0-UNet slower there, so one CPU flag
    cannot decide. Without ``name``, AMX decides.
    """
    if requested != "auto":
        return requested
    flags = cpu_bf16_flags()
    if not flags:
        return "float32"
    if name is None:
        return "mixed_bfloat16" if "amx_bf16" in flags else "float32"
    fp32, bf16 = timer(name, "float32", batch=batch), timer(name, "mixed_bfloat16", batch=batch)
    choice = "mixed_bfloat16" if fp32 >= BF16_MIN_SPEEDUP * bf16 else "float32"
    log.info("%s: training step at batch %d: %.0f ms float32, %.0f ms bf16 (%s): %s", name, batch, fp32 * 1e3,
             bf16 * 1e3, ", ".join(sorted(flags)), choice)
    return choice


#: The side of the square input a forward pass is timed on (native-scale images are ~450 x 380 px).
FORWARD_TIMING_SIDE = 384


def precision_twin(model: keras.Model, policy: str, members: Sequence[str] | None = None) -> keras.Model:
    """The same layers and input shape as ``model`` (any functional Keras model), computing under Keras
    dtype ``policy`` ('float32' or 'mixed_bfloat16').

    The weights are copied (variables stay float32 under 'mixed_bfloat16'; only the
    computation is bf16), the outputs keep the model's dtype policy's output dtype.
    ``members``: ensemble members (``ENSEMBLE_MEMBERS`` names) whose layers are recast, the other
    layers keep their own policy; None recasts every layer. A member that owns no layer of
    ``model`` is a ValueError.
    """
    prefixes = None if members is None else tuple(member_prefix(m) for m in members)
    if prefixes is not None:
        owned = [p for p in prefixes if any(layer.name.startswith(p) for layer in model.layers)]
        if not prefixes or len(owned) < len(prefixes):
            raise ValueError(f"{model.name} has no layers of member(s) {', '.join(members) or '(none)'}")

    def recast(layer):
        # Each layer's config names its own dtype policy, so a global policy would not reach a clone.
        config = layer.get_config()
        if prefixes is None or layer.name.startswith(prefixes):
            config = {**config, "dtype": policy}
        return layer.__class__.from_config(config)

    twin = keras.models.clone_model(model, clone_function=recast)
    twin.set_weights(model.get_weights())
    return twin


def precision_name(policy: str, members: Sequence[str] | None = None) -> str:
    """How a run's precision is reported: the Keras policy, plus the ensemble members it covers when
    only those compute in it (``"mixed_bfloat16 (encoder_decoder only)"``; the rest float32)."""
    return f"{policy} ({' + '.join(members)} only)" if members else policy


def time_forward(model: keras.Model, side: int = FORWARD_TIMING_SIDE, runs: int = 3) -> float:
    """Median seconds of one (1, side, side, 3) forward pass of ``model`` (after one warm-up pass).

    A fixed-size model is timed at its own input size.
    """
    import time

    import numpy as np

    h, w = (model.input_shape[1] or side), (model.input_shape[2] or side)
    x = np.random.default_rng(0).random((1, h, w, CONFIG.input_channels), dtype=np.float32)
    model.predict_on_batch(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def inference_precision(model: keras.Model, check=None, sha256: str | None = None, requested: str = "auto",
                        timer: Callable[[keras.Model], float] | None = None,
                        members: Sequence[str] | None = None) -> tuple[keras.Model, str, str]:
    """(model to run, its precision as :func:`precision_name` reports it, the reason in words) for inference.

    ``requested`` 'float32' or 'mixed_bfloat16' is obeyed (bf16 in the ensemble ``members`` only,
    when given). 'auto' runs bf16 only when all three
    hold: the CPU has native bf16 instructions (``cpu_bf16_flags``; emulated bf16 is many times
    slower), the model's manifest ``check`` allows it for these weights (``bf16_check_allows``:
    valid metrics within ``BF16_INFERENCE_TOLERANCE``), and a short forward measurement finds bf16
    at least ``BF16_MIN_SPEEDUP`` x faster (``timer(model)``: seconds per pass, default
    ``time_forward``): bf16 sped the
    seed U-Net's forward up 1.7x on an AVX512-BF16 CPU and slowed the Lite0-UNet's training there.
    A check that names ``members`` allows bf16 in those ensemble members only (the rest float32).
    """
    if requested == "float32":
        return model, "float32", "float32 requested"
    if requested == "mixed_bfloat16":
        return (precision_twin(model, "mixed_bfloat16", members), precision_name("mixed_bfloat16", members),
                "bf16 requested")
    if requested != "auto":
        raise ValueError(f"unknown precision {requested!r}: 'auto', 'float32' or 'mixed_bfloat16'")
    if not cpu_bf16_flags():
        return model, "float32", "this CPU has no native bf16 instructions"
    refusal = bf16_check_refusal(check, sha256)
    if refusal is not None:
        return model, "float32", refusal
    members = check.get("members")
    twin = precision_twin(model, "mixed_bfloat16", members)
    timer = timer or time_forward
    fp32, bf16 = timer(model), timer(twin)
    if fp32 >= BF16_MIN_SPEEDUP * bf16:
        return twin, precision_name("mixed_bfloat16", members), f"bf16 forward {fp32 / bf16:.2f}x faster than float32 here"
    return model, "float32", f"bf16 forward not faster here ({fp32 * 1e3:.0f} ms float32 vs {bf16 * 1e3:.0f} ms bf16)"


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
