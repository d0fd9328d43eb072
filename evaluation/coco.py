"""Box and mask AP from the reference COCO evaluator (pycocotools ``COCOeval``).

Published detector figures on FracAtlas (e.g. YOLOv8 mAP50 on the fractured images of
a split) come from this evaluator, which scores only images that have annotations'
image ids and ignores the negatives. Our own AP (metrics.average_precision) pools the
negatives too, so false findings on healthy X-rays count against it. Both are reported
side by side so that our numbers compare with the literature.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CocoImage:
    """One fractured image: truth and predictions in the same (height, width) pixel grid.

    truth_polygons: per annotated instance, a list of (K, 2) float arrays (x, y).
    truth_boxes: (M, 4) float (x0, y0, x1, y1). pred_boxes: (N, 4) float (x0, y0, x1, y1);
    pred_scores: (N,) float in [0, 1]; pred_masks: N binary (height, width) arrays or None.
    """

    height: int
    width: int
    truth_polygons: list
    truth_boxes: np.ndarray
    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    pred_masks: list | None = None


def _xywh(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def coco_ap(images: list[CocoImage], iou_types: tuple[str, ...] = ("bbox", "segm")) -> dict[str, float]:
    """{"box_ap50", "box_ap", "mask_ap50", "mask_ap"} from COCOeval (AP@[.5:.95] and AP@.5, maxDets 100).

    Keys of iou types not asked for, or without any prediction, are NaN.
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "fracture"}]}
    dets_box, dets_segm = [], []
    ann_id = 1
    for img_id, im in enumerate(images, start=1):
        gt["images"].append({"id": img_id, "height": int(im.height), "width": int(im.width)})
        for polys, box in zip(im.truth_polygons, im.truth_boxes, strict=True):
            seg = [np.asarray(p, np.float64).ravel().tolist() for p in polys]
            rles = mask_utils.frPyObjects(seg, im.height, im.width)
            area = float(mask_utils.area(mask_utils.merge(rles)))
            gt["annotations"].append({"id": ann_id, "image_id": img_id, "category_id": 1, "segmentation": seg,
                                      "area": area, "bbox": _xywh(box), "iscrowd": 0})
            ann_id += 1
        for k, (box, score) in enumerate(zip(im.pred_boxes, im.pred_scores, strict=True)):
            dets_box.append({"image_id": img_id, "category_id": 1, "bbox": _xywh(box), "score": float(score)})
            if im.pred_masks is not None:
                rle = mask_utils.encode(np.asfortranarray(im.pred_masks[k].astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                dets_segm.append({"image_id": img_id, "category_id": 1, "segmentation": rle, "score": float(score)})
    out = {"box_ap50": float("nan"), "box_ap": float("nan"), "mask_ap50": float("nan"), "mask_ap": float("nan")}
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress; keep CLI output clean
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        for iou_type, dets, prefix in (("bbox", dets_box, "box"), ("segm", dets_segm, "mask")):
            if iou_type not in iou_types or not dets:
                continue
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out[f"{prefix}_ap"] = float(ev.stats[0])
            out[f"{prefix}_ap50"] = float(ev.stats[1])
    return out
