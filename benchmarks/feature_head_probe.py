"""Would a logistic image-level head on the model's pooled encoder features beat its map score?

    python benchmarks/feature_head_probe.py [--model ensemble] [--layer NAME] [--train-fractured 400]
        [--train-negatives 800] [--cs 0.01 0.03 0.1] [--seed 1337]

Runs the shipped model (its manifest entry's inference settings, float32) once over a random
FracAtlas train subset, the whole FracAtlas valid split and BoneFractureYolo8's valid part,
keeping per image the pooled features of ``--layer`` (default: the layer of the model's
"unlike the training images" check) and the entry's image score. Then, per ``--cs`` value, a
standardised L2 logistic regression on [features, logit(score)]:

- fitted on the train subset, scored on FracAtlas valid (ROC-AUC);
- fitted within FracAtlas valid (5-fold cross-validated predictions, ROC-AUC);
- fitted on all of FracAtlas valid, applied to BoneFractureYolo8 valid (fractured X-rays only):
  the share of them above the score that keeps 80 % / 90 % of FracAtlas valid's negatives
  below it (cross-validated on valid), against the same share for the map score alone.

Prints one JSON line per fit. The test split is not read; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # fit_ood's feature loop; the tools are scripts

#: Negatives kept below the score at which the other source's sensitivity is read.
SPECIFICITIES = (0.8, 0.9)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of scores in [0, 1], clipped to 1e-4 from either end: (N,) -> (N, 1) float64."""
    q = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    return np.log(q / (1 - q))[:, None]


def features_and_scores(predictor, records: list, threshold: float, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pooled features (N, C) float32, image scores (N,), labels (N,) 0/1) of the readable ``records``."""
    from fit_ood import featured_outcomes

    fractured = {r.path: int(r.fractured) for r in records}
    outcomes = list(featured_outcomes(predictor, [r.path for r in records], 4, label, threshold))
    return (np.stack([o.features for o in outcomes]), np.asarray([o.result.image_score for o in outcomes]),
            np.asarray([fractured[o.tag] for o in outcomes]))


def share_above(scores: np.ndarray, negatives: np.ndarray, specificity: float) -> float:
    """Share of ``scores`` above the cut that keeps ``specificity`` of ``negatives`` at or below it."""
    cut = np.quantile(negatives, specificity)
    return float(np.mean(scores > cut))


def probe(sets: dict, cs: list[float], seed: int) -> list[dict]:
    """One row per C: the three fits of the module docstring, beside the map score alone."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = {k: np.hstack([f, logit(s)]) for k, (f, s, _) in sets.items()}
    (_, s_tr, y_tr), (_, s_va, y_va), (_, s_y8, _) = sets["train"], sets["valid"], sets["yolo8"]
    rows = [{"fit": "map score alone", "train_auc": roc_auc_score(y_tr, s_tr), "valid_auc": roc_auc_score(y_va, s_va),
             **{f"yolo8_sensitivity_at_spec{p}": share_above(s_y8, s_va[y_va == 0], p) for p in SPECIFICITIES}}]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    for c in cs:
        head = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        on_train = head.fit(x["train"], y_tr).predict_proba(x["valid"])[:, 1]
        cv = cross_val_predict(head, x["valid"], y_va, cv=folds, method="predict_proba")[:, 1]
        on_y8 = head.fit(x["valid"], y_va).predict_proba(x["yolo8"])[:, 1]
        rows.append({"fit": f"head C={c}", "valid_auc_fitted_on_train": roc_auc_score(y_va, on_train),
                     "valid_auc_cross_validated": roc_auc_score(y_va, cv),
                     **{f"yolo8_sensitivity_at_spec{p}": share_above(on_y8, cv[y_va == 0], p) for p in SPECIFICITIES}})
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ensemble", help="a model of the manifest (default: ensemble)")
    ap.add_argument("--layer", help="feature layer (default: the one of the model's OOD check)")
    ap.add_argument("--train-fractured", type=int, default=400)
    ap.add_argument("--train-negatives", type=int, default=800)
    ap.add_argument("--cs", type=float, nargs="+", default=[0.01, 0.03, 0.1], help="inverse L2 strengths tried")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--data", help="FracAtlas folder (default: $FRACATLAS_DIR, then the usual places)")
    args = ap.parse_args(argv)

    from cli.common import load_listed_model, require_data_dir, require_yolo8_dir
    from fracture.bone_fracture_yolo8 import BoneFractureYolo8
    from fracture.dataset import FracAtlas
    from important_variables import CONFIG
    from prediction import predictor_for

    model, entry = load_listed_model(args.model, CONFIG.saved_model_dir)
    layer = args.layer or (entry.get("ood") or {}).get("layer")
    if layer is None:
        ap.error(f"{args.model} has no OOD check naming a feature layer: pass --layer")
    predictor = predictor_for(model, args.model, entry, precision="float32", feature_layer=layer, ood=None)
    atlas = FracAtlas(require_data_dir(args.data))
    rng = random.Random(args.seed)
    pos, neg = atlas.records("train", fractured=True), atlas.records("train", fractured=False)
    rng.shuffle(pos)
    rng.shuffle(neg)
    records = {"train": pos[: args.train_fractured] + neg[: args.train_negatives], "valid": atlas.records("valid"),
               "yolo8": BoneFractureYolo8(require_yolo8_dir()).records("valid")}
    sets = {k: features_and_scores(predictor, recs, entry.threshold, k) for k, recs in records.items()}
    for row in probe(sets, args.cs, args.seed):
        print(json.dumps({"model": args.model, "layer": layer, "image_score": entry.image_score,
                          "images": {k: int(len(v[2])) for k, v in sets.items()}, **row}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
