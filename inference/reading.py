"""What a result says in words, the same in the app, in ``predict.py`` and in the JSON. Pure Python, no UI.

The state (finding / borderline / no finding, :func:`result_status`) and the calibrated likelihood
(:func:`likelihood`) are decided here too, the numbers coming from the result and the model's
manifest entry. Rules every sentence here follows:

- **no all-clear:** a result without a finding is "no finding at threshold T", never "no
  fracture" or "clean", and it always says how often the model left a fractured validation
  X-ray without a finding at T (the manifest's ``operating_points``), per source when recorded;
- **a likelihood says what it is calibrated on** ("on FracAtlas validation X-rays") and is
  never shown as 0 % or 100 %: below 5 % it reads "< 5 %", above 95 % "> 95 %"; where the
  calibration was checked on another source and does not hold there, the sentence says so;
- **"unlike the training images"** (``ood``) is a warning beside the reading, never a reason
  to hide or change a finding.

:func:`result_record` is the one JSON object per file (app download = ``predict.py --json``):
the result's fields (``inference.results.PredictionResult.to_dict``), the reading's (``status_fields``),
``reading`` (the full text) and ``note``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized

import cv2
import numpy as np

from important_variables import CONFIG
from inference.calibration import apply_calibration, valid_calibration
from inference.findings import IMAGE_SCORES, FindingRule, image_scores
from inference.model_card import DEFAULT_SOURCE, miss_note, miss_notes_by_source
from inference.results import result_to_dict

# --------------------------------------------------------------------------- state and likelihood
# How to read one image's result: its state (finding, borderline, no finding) and its calibrated
# fracture likelihood. Pure numpy/OpenCV, no UI.
#
# A near miss must not look like an all-clear: an image without a finding whose highest
# score is within ``margin`` of the threshold is *borderline* ("review this area", with the
# spot marked), and the rest is *no finding at the threshold*, which is never called clear
# (the models miss fractures at every threshold; the words below say how many). The likelihood is the model's image-level
# score (the manifest's ``image_score``) through the calibration fitted on valid (the
# manifest's ``calibration``); without one there is no likelihood, only scores. The app,
# ``predict.py``'s JSON (``"status"``) and the downloads all take both from here.
FINDING, BORDERLINE, NO_FINDING = "finding", "borderline", "no_finding"
STATUSES = (FINDING, BORDERLINE, NO_FINDING)


def result_status(findings: Sized | int, top_score: float, threshold: float, margin: float) -> str:
    """"finding" when there is at least one finding; else "borderline" when
    ``top_score >= threshold - margin``; else "no_finding".

    findings: the findings (any sized collection) or their number. top_score: the
    image's highest fracture score in [0, 1]. margin ≥ 0 (0: no borderline state).
    """
    n = findings if isinstance(findings, int) else len(findings)
    if n > 0:
        return FINDING
    return BORDERLINE if float(top_score) >= float(threshold) - max(0.0, float(margin)) else NO_FINDING


def borderline_margin(entry: Mapping | None) -> float:
    """A model's margin from its manifest entry (``borderline_margin``, chosen on valid),
    else the configured default. Values outside [0, 1) fall back too."""
    try:
        value = float((entry or {})["borderline_margin"])
    except (KeyError, TypeError, ValueError):
        return CONFIG.default_borderline_margin
    return value if 0.0 <= value < 1.0 else CONFIG.default_borderline_margin


def borderline_spot(prob: np.ndarray, threshold: float, margin: float) -> tuple[int, int, int, int] | None:
    """Box (x0, y0, x1, y1), x1/y1 exclusive, of the spot to review on a borderline image.

    The connected region of ``prob >= threshold - margin`` that holds the highest
    score; None when even the highest score is below that level. prob: (H, W) float
    in [0, 1].
    """
    if prob.size == 0:
        return None
    level = float(threshold) - max(0.0, float(margin))
    y, x = np.unravel_index(int(np.argmax(prob)), prob.shape)
    if prob[y, x] < level:
        return None
    _n, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= level).view(np.uint8), connectivity=8)
    bx, by, bw, bh, _area = (int(v) for v in stats[labels[y, x]])
    return (bx, by, bx + bw, by + bh)


def likelihood_from_scores(scores: Mapping[str, float], entry: Mapping | None) -> float | None:
    """Calibrated fracture likelihood in [0, 1] from an image's candidate scores ({name: value},
    see ``inference.findings.image_scores``), or None when the entry has no usable calibration.

    The score fed to the calibration is the entry's ``image_score`` ("max_prob" when absent).
    """
    entry = entry or {}
    cal = valid_calibration(entry.get("calibration"))
    kind = entry.get("image_score") or "max_prob"
    if cal is None or kind not in IMAGE_SCORES or kind not in scores:
        return None  # not calibrated, or a score this code cannot compute: no number rather than a wrong one
    return apply_calibration(scores[kind], cal)


def likelihood(prob: np.ndarray, finding_scores: list[float], entry: Mapping | None) -> float | None:
    """:func:`likelihood_from_scores` of a probability map (H, W) float in [0, 1] and its findings'
    scores, with the entry's finding rule (``findings``, e.g. ``topk_px``) for the top-k score."""
    entry = entry or {}
    fields = entry.get("findings") if isinstance(entry.get("findings"), Mapping) else {}
    rule = FindingRule(**{k: v for k, v in fields.items() if k in FindingRule.__dataclass_fields__})
    return likelihood_from_scores(image_scores(prob, list(finding_scores), rule), entry)


def status_fields(result, entry: Mapping | None, threshold: float | None = None) -> dict:
    """The reading of ``result`` (a ``PredictionResult``) as JSON fields: {"status",
    "borderline_margin", "review_box" ([x0, y0, x1, y1] of the spot to review on a borderline
    image, x1/y1 exclusive, else None), "fracture_likelihood" (None: not calibrated)}.

    entry: the model's manifest entry (a mapping; None or {} = defaults, no calibration).
    threshold: the threshold the status is judged at (default: the result's own).
    """
    margin = borderline_margin(entry)
    t = result.threshold if threshold is None else threshold
    # The result's own candidate scores (its finding rule), as the calibration was fitted on.
    scores = result.image_scores() if hasattr(result, "image_scores") else image_scores(
        result.prob, [f.score for f in result.findings])
    lk = likelihood_from_scores(scores, entry)
    status = result_status(result.findings, result.fracture_score, t, margin)
    spot = borderline_spot(result.prob, t, margin) if status == BORDERLINE else None
    return {
        "status": status,
        "borderline_margin": round(margin, 4),
        "review_box": None if spot is None else list(spot),
        "fracture_likelihood": None if lk is None else round(lk, 4),
    }


__all__ = ["FINDING", "BORDERLINE", "NO_FINDING", "STATUSES", "result_status", "borderline_margin",
           "borderline_spot", "likelihood", "likelihood_from_scores", "status_fields"]


# --------------------------------------------------------------------------- words
#: Likelihoods outside [LOW, HIGH] are shown as "< 5 %" / "> 95 %": a calibration fitted on a few
#: hundred X-rays of one source cannot tell 1 % from 0 %, and 0 % would read as "ruled out".
LIKELIHOOD_LOW, LIKELIHOOD_HIGH = 0.05, 0.95
OOD_WHY = ("The model may do worse on it than its published figures (other hospitals or devices, children, "
           "orthopaedic hardware, photos of screens, or a picture that is not an X-ray). Any marks are shown as found.")


def likelihood_value(lk: float) -> str:
    """A likelihood in [0, 1] as shown: "< 5 %", "> 95 %", else "≈ N %" (N rounded to a whole percent)."""
    if lk < LIKELIHOOD_LOW:
        return f"< {LIKELIHOOD_LOW:.0%}".replace("%", " %")
    if lk > LIKELIHOOD_HIGH:
        return f"> {LIKELIHOOD_HIGH:.0%}".replace("%", " %")
    return f"≈ {round(100 * lk)} %"


def calibrated_on(entry: Mapping | None) -> str:
    """What the entry's calibration was fitted on, in words: "FracAtlas validation X-rays"."""
    cal = valid_calibration((entry or {}).get("calibration")) or {}
    split = str(cal.get("fitted_on") or "valid")
    return f"{cal.get('data') or DEFAULT_SOURCE} {'validation' if split == 'valid' else split} X-rays"


def _share_fractured(entry: Mapping | None) -> float | None:
    cal = valid_calibration((entry or {}).get("calibration")) or {}
    n, pos = cal.get("n"), cal.get("n_positive")
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (n, pos)) and n > 0
    return pos / n if ok else None


def likelihood_sentence(lk: float | None, entry: Mapping | None, by_source: Sequence[Mapping] = ()) -> str:
    """The likelihood with what it is calibrated on, and where it does not hold.

    by_source: ``inference.model_card.reliability_by_source`` of the model ([] when only one source was evaluated).
    """
    if lk is None:
        return "Fracture likelihood: not calibrated for this model (scores are not likelihoods)."
    text = f"Fracture likelihood {likelihood_value(lk)} (calibrated on {calibrated_on(entry)}"
    share = _share_fractured(entry)
    if share is not None:
        text += f", {share:.0%} of which hold a fracture"
    failing = [b for b in by_source if not b.get("holds")]
    if failing:
        text += "; it does not hold on X-rays from " + ", ".join(
            f"{b['source']} (calibration error {b['ece']:.2f})" if b.get("ece") is not None else
            f"{b['source']} (not checkable there)" for b in failing) + ", so read it as a rough guide for such X-rays"
    elif not by_source:
        text += "; not checked on X-rays from other sources, where it can be far off"
    return text + ")."


def headline(status: str, n_findings: int, threshold: float, top: float, margin: float) -> str:
    """The state in one sentence, with the threshold and the highest score."""
    if status == FINDING:
        return (f"Possible fracture: {n_findings} finding(s) at threshold {threshold:.2f} (highest score {top:.3f}). "
                "Review the marked region(s).")
    if status == BORDERLINE:
        return (f"Borderline: no region reached threshold {threshold:.2f}, but the highest score {top:.3f} is within "
                f"{margin:.2f} of it. Review this area (dashed box).")
    return f"No finding at threshold {threshold:.2f} (highest score anywhere {top:.3f})."


def miss_sentence(entry: Mapping | None, threshold: float) -> str:
    """For a no-finding result: what the model misses at ``threshold`` (recorded on valid, per source when recorded)."""
    text = miss_note(entry, threshold) or ("How many fractures this model misses at this threshold is not recorded: "
                                           "no mark does not rule a fracture out.")
    per_source = miss_notes_by_source(entry, threshold)
    if per_source:
        text += " By source: " + "; ".join(per_source) + "."
    return text


def check_sources(check: Mapping | None) -> str:
    """The data sources an OOD check was fitted and thresholded on, in words ("FracAtlas and
    BoneFractureYolo8"), from the record's ``sources`` list (``tools/fit_ood.py`` writes it);
    :data:`DEFAULT_SOURCE` when the record names none."""
    names = check.get("sources") if isinstance(check, Mapping) else None
    names = [str(n) for n in names] if isinstance(names, list | tuple) else []
    return " and ".join(dict.fromkeys(names)) or DEFAULT_SOURCE


def ood_sentence(ood, entry: Mapping | None) -> str | None:
    """The "unlike the training images" warning for an ``inference.ood.OodReading`` that is flagged; None otherwise."""
    if ood is None or not ood.unlike:
        return None
    check = (entry or {}).get("ood")
    target = check.get("false_alarm_target") if isinstance(check, Mapping) else None
    rate = (f", a level that {target:.0%} of the {check_sources(check)} validation X-rays exceed"
            if isinstance(target, int | float) and not isinstance(target, bool) else "")
    return (f"Unlike the training images: this image's features are far from those of the "
            f"{check_sources(check)} training X-rays (distance {ood.distance:.2f}; the warning starts "
            f"above {ood.threshold:.2f}{rate}). " + OOD_WHY)


def reading_parts(result, fields: Mapping, entry: Mapping | None, threshold: float | None = None,
                  by_source: Sequence[Mapping] = ()) -> dict[str, str | None]:
    """{"headline", "likelihood", "miss" (no-finding results only), "ood" (flagged images only)}."""
    t = result.threshold if threshold is None else threshold
    status = fields["status"]
    return {
        "headline": headline(status, len(result.findings), t, result.fracture_score, fields["borderline_margin"]),
        "likelihood": likelihood_sentence(fields["fracture_likelihood"], entry, by_source),
        "miss": miss_sentence(entry, t) if status == NO_FINDING else None,
        "ood": ood_sentence(getattr(result, "ood", None), entry),
    }


def reading_text(parts: Mapping[str, str | None]) -> str:
    """The parts as one paragraph (one line): the JSON's ``reading`` and ``predict.py``'s summary."""
    return " ".join(parts[k] for k in ("ood", "headline", "miss", "likelihood") if parts.get(k))


def result_record(result, file: str, model: str, entry: Mapping | None, threshold: float | None = None,
                  note: str | None = None, error: str | None = None, by_source: Sequence[Mapping] = ()) -> dict:
    """The one JSON object of a file, the same keys in the app's download and ``predict.py --json``.

    result: a ``PredictionResult`` or None (the file failed: ``error`` says why, the other fields are null).
    """
    rec = result_to_dict(result, file, model, error)
    if result is None:
        rec.update({"status": None, "borderline_margin": None, "review_box": None, "fracture_likelihood": None,
                    "reading": None})
    else:
        fields = status_fields(result, entry, threshold)
        rec.update(fields)
        rec["reading"] = reading_text(reading_parts(result, fields, entry, threshold, by_source))
    rec["note"] = note
    return rec


__all__ = ["LIKELIHOOD_LOW", "LIKELIHOOD_HIGH", "OOD_WHY", "likelihood_value", "calibrated_on", "likelihood_sentence",
           "headline", "miss_sentence", "check_sources", "ood_sentence", "reading_parts", "reading_text", "result_record"]
