"""Honest evaluation of the segmentation models on the official FracAtlas split.

Small modules, one job each; ``evaluate.py`` is the command line over them:

- ``definitions``: the constants and the wording written into every report;
- ``cases``: inference on a split (through ``prediction.iter_predictions``) → cases;
- ``scoring``: every number of a report from the cases at one threshold;
- ``intervals``: bootstrap intervals of the image-level numbers, and paired differences of two reports;
- ``thresholds``: the sweep on valid, the criterion, its manifest record;
- ``evaluator``: one model on one split → :class:`Evaluation` (report, cases, curves);
- ``report``: JSON, markdown, PR/ROC plots, best/worst grid;
- ``ship``: copies a test-split report next to the shipped models;
- ``validator``: :class:`Validator`, the same case building and scoring for a trainer.
"""
