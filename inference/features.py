"""A segmentation model's own image features, for the "unlike the training images" check.

Any Keras functional model works (the shipped U-Net and encoder-decoder, or any other
encoder-decoder saved as ``.keras``). The feature is the **global average of the deepest
encoder feature map**: the per-channel mean over the image of one inner layer's output,
a vector of that layer's channel count (256 for both shipped models).

Which layer (:func:`deepest_feature_layer`, the documented rule):

1. candidates are the model's layers, in the model's own (topological) order, whose output
   is one 4-D tensor (N, h, w, C), the input layer and the output layer excluded;
2. a candidate must *follow the image*: run on two probe sizes, its h and w grow with the
   input (this drops 1x1 maps such as a squeeze-and-excitation branch, whose size is fixed).
   A model with a fixed input size is probed once at that size, and 1x1 maps are dropped;
3. of the rest, the one with the smallest h x w, i.e. the encoder's coarsest level; among
   layers of that size the **last** one in model order, which is the end of the bottleneck
   (after its convolutions and activations, before the decoder's first upsampling).

For the shipped models that is ``bottleneck_conv2`` (1/16 of the input for the U-Net,
1/8 for the encoder-decoder). A caller may name another layer instead (``tools/fit_ood.py
--layer NAME``); the chosen name is stored with the check in the manifest, so prediction
never re-runs the rule.

Only the part of the map that covers the image is averaged (:func:`pooled_features`):
native-scale inputs are padded at the bottom and right, and the padding is not the X-ray.

Keras is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import math

import numpy as np

#: Probe sizes for rule 2 (multiples of 32, so encoders that halve 5 times still give >= 2 px).
PROBE_SIDES = (128, 192)


def _spatial_layers(model) -> list:
    """Layers with one 4-D output, in model order, without the input and output layers."""
    outputs = {id(t) for t in model.outputs}
    keep = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            out = layer.output
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
        if out is None or isinstance(out, list | tuple) or id(out) in outputs:
            continue
        if len(getattr(out, "shape", ())) == 4:
            keep.append(layer)
    return keep


def _probe_sizes(model, layers: list, side: int) -> dict[str, tuple[int, int]]:
    """{layer name: (h, w)} of ``layers`` for a side x side input of zeros."""
    import keras

    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    channels = int(model.input_shape[-1])
    outs = probe(np.zeros((1, side, side, channels), np.float32), training=False)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    return {layer.name: (int(o.shape[1]), int(o.shape[2])) for layer, o in zip(layers, outs, strict=True)}


def deepest_feature_layer(model) -> str:
    """The name of the layer whose pooled output is the model's image feature (module docstring rule).

    Raises ValueError when the model has no such layer (e.g. a model without 4-D maps).
    """
    layers = _spatial_layers(model)
    if not layers:
        raise ValueError(f"{model.name}: no layer with a 4-D (N, h, w, C) output to take features from")
    fixed = model.input_shape[1] is not None and model.input_shape[2] is not None
    if fixed:
        sizes = {layer.name: (int(layer.output.shape[1]), int(layer.output.shape[2])) for layer in layers}
        ok = [layer for layer in layers if sizes[layer.name] != (1, 1)]
    else:
        small, large = (_probe_sizes(model, layers, s) for s in PROBE_SIDES)
        sizes = small
        ok = [layer for layer in layers if large[layer.name][0] > small[layer.name][0] and large[layer.name][1] > small[layer.name][1]]
    if not ok:
        raise ValueError(f"{model.name}: no feature map that follows the image size")
    area = min(sizes[layer.name][0] * sizes[layer.name][1] for layer in ok)
    return [layer for layer in ok if sizes[layer.name][0] * sizes[layer.name][1] == area][-1].name


def with_features(model, layer_name: str):
    """A model with two outputs, [the model's output, ``layer_name``'s output], sharing the weights.

    One forward pass gives both the probability map and the feature map. Raises ValueError
    for a name the model does not have.
    """
    import keras

    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        raise ValueError(f"{model.name}: no layer named {layer_name!r}") from None
    return keras.Model(model.inputs, [model.outputs[0], layer.output], name=f"{model.name}_with_features")


def pooled_features(fmap: np.ndarray, image_hw: tuple[int, int], input_hw: tuple[int, int]) -> np.ndarray:
    """Global average of the part of ``fmap`` that covers the image: (C,) float32.

    fmap: (h, w, C) feature map of an input of ``input_hw`` (padded) pixels whose top-left
    ``image_hw`` pixels are the image. The cells kept are ceil(image / input x map size)
    per axis (at least one).
    """
    h, w = fmap.shape[:2]
    keep_h = max(1, min(h, math.ceil(image_hw[0] / input_hw[0] * h - 1e-9)))
    keep_w = max(1, min(w, math.ceil(image_hw[1] / input_hw[1] * w - 1e-9)))
    return np.asarray(fmap[:keep_h, :keep_w], np.float32).mean(axis=(0, 1))


__all__ = ["PROBE_SIDES", "deepest_feature_layer", "with_features", "pooled_features"]
