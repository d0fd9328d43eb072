"""Fixed wording and constants of the evaluation: what every report says it measured.

``DEFINITIONS`` and ``CRITERION_DEFINITION`` are written into every report and the
manifest; the tests check ``REPORT_KEYS`` (one list of the top-level report keys).
"""

from __future__ import annotations

#: Thresholds tried by --choose-threshold: 0.05, 0.10, ..., 0.95, then 0.97, 0.98, 0.99. The top
#: steps are finer because the native-scale models are confident: on valid their best F1 sat at
#: the old top, 0.95.
SWEEP: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20)) + (0.97, 0.98, 0.99)
#: IoU levels for box AP / recall; the criterion uses the looser one.
AP_IOUS: tuple[float, ...] = (0.5, 0.25)
#: The top-k hit rate counts annotated fractures matched by one of an image's k best findings.
TOPK_HIT = 3
CRITERION = "findings_f1_iou25"
CRITERION_IOU = 0.25
CRITERION_DEFINITION = (
    "F1 = 2TP / (2TP + FP + FN) of the findings against the annotated fracture boxes, pooled over "
    "the fractured and the negative images of the valid split; a finding is a TP when greedy "
    "one-to-one matching by score pairs it with an annotated box at IoU >= 0.25, every other finding "
    "(all findings on negative images included) is a FP, every unmatched annotated box is a FN. "
    "It balances missed fractures against false findings. Ties go to the higher threshold (fewer "
    "findings for the same F1); a best F1 of 0 chooses nothing."
)
GRID_N = 8
CREDIT = (
    "Images: FracAtlas, Abedeen et al., Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4, "
    "CC BY 4.0"
)
DEFINITIONS = {
    "dice_iou": "per fractured image, the findings' regions at the threshold (what the app outlines; "
    "see settings.findings_rule) vs the annotated mask (all instances merged), both at the image's "
    "own resolution; a fractured image without any finding scores 0; then mean and median over images",
    "findings": "8-connected regions seeded where prob >= threshold and grown over the connected pixels "
    ">= low_ratio x threshold (settings.findings_rule; low_ratio 1 = plain thresholding), regions below "
    "min_area_px dropped, at most max_findings kept (null = all); box in original pixels; score = the "
    "region's maximum or mean probability (findings_rule.score), which also ranks the findings "
    "(findings.regions)",
    "box_ap": "all-point interpolated AP over the findings of all evaluated images pooled by score; "
    "greedy one-to-one matching per image by decreasing score at IoU >= 0.5 (ap50) / 0.25 (ap25) "
    "against the COCO instance boxes; only findings at the threshold exist, so the curve ends there",
    "recall_at_threshold": "matched annotated boxes / all annotated boxes, at the threshold",
    "top3_hit_rate": "annotated boxes matched (greedy, IoU >= 0.25) by one of their image's 3 highest-scored "
    "findings at the threshold / all annotated boxes: what a reader of the first three numbered boxes sees",
    "source": "the data set the split comes from: FracAtlas (official split) or BoneFractureYolo8 (its valid "
    "part carved by original name: fractured images only, since its unlabelled images are not verified "
    "negatives, so image-level numbers that need negatives are null there)",
    "fracture_score": "the image-level score named by settings.image_score: max_prob = highest "
    "probability in the image, topk_mean = mean of its findings_rule.topk_px highest probabilities, "
    "best_finding = score of its best finding at the threshold (0 without one)",
    "roc_auc": "fracture score, fractured vs negative images; ties count 1/2 (Mann-Whitney U)",
    "sensitivity": "fractured images with at least one finding / fractured images",
    "specificity": "negative images without any finding / negative images",
    "false_findings_per_negative_image": "findings on negative images / negative images",
    "intervals": "95 % bootstrap intervals of mean Dice, ROC-AUC, sensitivity, specificity and false findings "
    "per negative over this split's images (evaluation.intervals: fractured and negative images resampled "
    "separately, 2000 resamples); box AP has none (it pools the findings of all images)",
    "pixel_accuracy": "share of pixels where the findings' regions equal the annotation, pooled over "
    "the images of the scope; all_background = the same for a prediction of nothing",
    "settings": "how the probability maps were made and cut: scale (native = whole image at the "
    "training scale, fixed = squeezed to the model's input), tta (averaged with the horizontally "
    "flipped pass), findings_rule, image_score, precision (the Keras dtype policy of the forward "
    "pass: float32, or mixed_bfloat16 where it was checked on valid and measured faster)",
}
#: Top-level keys every report has (the tests check them).
REPORT_KEYS = (
    "model", "model_label", "model_file", "model_sha256", "source", "split", "data_dir", "date", "command",
    "limit", "threshold", "threshold_source", "settings", "counts", "segmentation", "localization",
    "image_level", "intervals", "calibration", "pixel_accuracy", "by_body_part", "threshold_choice", "timing", "definitions",
    "per_image",
)
