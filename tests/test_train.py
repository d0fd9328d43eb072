"""train.py end to end on a few real images: a few steps, resume, MirroredStrategy."""

import json

import pytest

import train


def _args(data_dir, tmp_path, *extra):
    return [
        "--data", str(data_dir), "--limit", "4", "--steps-per-epoch", "2", "--batch-size", "2",
        "--valid-negatives", "2", "--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt"),
        "--verbose", "0", *extra,
    ]


def test_train_writes_weights_history_manifest_and_resumes(data_dir, tmp_path):
    assert train.main(["--model", "encoder_decoder", "--epochs", "1", *_args(data_dir, tmp_path)]) == 0
    out = tmp_path / "out"
    state = json.loads((tmp_path / "ckpt" / "encoder_decoder" / "state.json").read_text())
    assert state["epoch"] == 1
    assert (out / "encoder_decoder.keras").is_file()
    assert (out / "encoder_decoder.history.png").is_file()
    assert len((out / "encoder_decoder.history.csv").read_text().strip().splitlines()) == 2
    manifest = json.loads((out / "manifest.json").read_text())["models"]["encoder_decoder"]
    assert manifest["params"] == 1_554_498 and len(manifest["sha256"]) == 64

    # Rerunning with more epochs continues at epoch 2, not from scratch.
    assert train.main(["--model", "encoder_decoder", "--epochs", "2", *_args(data_dir, tmp_path)]) == 0
    state = json.loads((tmp_path / "ckpt" / "encoder_decoder" / "state.json").read_text())
    assert [r["epoch"] for r in state["history"]] == [1, 2]
    assert len((out / "encoder_decoder.history.csv").read_text().strip().splitlines()) == 3

    # Rerunning the finished command trains nothing more.
    assert train.main(["--model", "encoder_decoder", "--epochs", "2", *_args(data_dir, tmp_path)]) == 0
    assert len(json.loads((tmp_path / "ckpt" / "encoder_decoder" / "state.json").read_text())["history"]) == 2


def test_train_under_mirrored_strategy(data_dir, tmp_path):
    assert train.main(["--model", "unet", "--epochs", "1", "--strategy", "mirrored", *_args(data_dir, tmp_path)]) == 0
    assert (tmp_path / "out" / "unet.keras").is_file()


def test_cosine_schedule_is_a_function_of_the_epoch():
    assert train.cosine_lr(0, 10, 1e-3) == pytest.approx(1e-3)
    assert train.cosine_lr(9, 10, 1e-3) == pytest.approx(5e-5)
    assert train.cosine_lr(3, 10, 1e-3) > train.cosine_lr(4, 10, 1e-3)


def test_missing_data_dir_is_a_usage_error(tmp_path):
    assert train.main(["--model", "unet", "--epochs", "1", "--data", str(tmp_path / "nope")]) == 2


def test_fine_tuning_continues_the_record_and_keeps_better_weights(data_dir, tmp_path):
    out = tmp_path / "out"
    assert train.main(["--model", "encoder_decoder", "--epochs", "1", *_args(data_dir, tmp_path)]) == 0
    first = json.loads((out / "manifest.json").read_text())["models"]["encoder_decoder"]
    args = _args(data_dir, tmp_path)
    args[args.index("--checkpoint-dir") + 1] = str(tmp_path / "ckpt-ft")
    rc = train.main(["--model", "encoder_decoder", "--epochs", "1", "--crop", "0", "--select-on", "balanced",
                     "--init-from", str(out / "encoder_decoder.keras"), *args])
    assert rc == 0
    rows = (out / "encoder_decoder.history.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[1].split(",")[1] == "crop128" and rows[2].split(",")[1] == "full"
    state = json.loads((tmp_path / "ckpt-ft" / "encoder_decoder" / "state.json").read_text())
    entry = json.loads((out / "manifest.json").read_text())["models"]["encoder_decoder"]
    if state["best_epoch"] == 1:  # the fine-tuned epoch beat the starting weights: both phases recorded
        assert entry["epochs"] == 2 and " && " in entry["training_command"]
    else:  # it did not: the shipped file is untouched
        assert entry["sha256"] == first["sha256"]


def test_selection_score():
    v = {"dice": 0.2, "neg_clean": 0.6}
    assert train.selection_score(v, "dice") == pytest.approx(0.2)
    assert train.selection_score(v, "balanced") == pytest.approx(0.4)
    assert train.selection_score({"dice": 0.2, "neg_clean": float("nan")}, "balanced") == pytest.approx(0.2)
