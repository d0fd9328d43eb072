"""The app's fixed wording, shared by its pages (one place to say what the data and the models are)."""

from __future__ import annotations

MODEL_BLURBS = {
    "unet": "Skip connections carry fine detail from encoder to decoder: sharper outlines.",
    "encoder_decoder": "Same idea without skip connections: a smaller baseline with blurrier masks.",
    "lite0_unet": "A U-Net decoder on an ImageNet-pretrained EfficientNet-Lite0 encoder, trained on two X-ray sources.",
    "ensemble": "The Lite0-UNet and the encoder-decoder on each image, their maps averaged: fewer misses, about three times the Lite0-UNet's time.",
}

DISCLAIMER = (
    "This tool is a second pair of eyes for people who already read X-rays. It is **not a "
    "diagnosis** and not a medical device: a missed fracture or a false mark is possible on "
    "every image."
)
PRIVACY = "Images are processed in memory and never stored: nothing you upload is written to disk or kept after you leave."
CREDIT = (
    "Models trained on **FracAtlas**: Abedeen et al., *FracAtlas: A Dataset for Fracture "
    "Classification, Localization and Segmentation of Musculoskeletal Radiographs*, "
    "Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4. The Lite0-UNet and the encoder-decoder (and so their ensemble, the default) are also trained on "
    "**Bone Fracture Detection** (Roboflow Universe, workspace *veda*, project *bone-fracture-detection-daoon*, "
    "version 4; some of its images come from other public collections) and starts from ImageNet weights "
    "of EfficientNet-Lite0. Data licensed [CC BY 4.0](https://creativecommons.org/licenses/by/4.0/)."
)

#: What FracAtlas holds, from its dataset.csv and paper, and nothing more: the data set
#: records no age or sex, so the app claims nothing about either.
DATA_FACTS = (
    "FracAtlas: 4,083 musculoskeletal X-rays from three hospitals in Bangladesh, tagged hand "
    "(1,538), leg (2,273), hip (338) and shoulder (349), some showing more than one part; 717 "
    "show fractures, outlined by hand as 922 fracture regions; 99 show orthopaedic hardware. "
    "Frontal, lateral and oblique views. Patient age and sex are not recorded, so how children "
    "and adults are represented is unknown (images with open growth plates are among them)."
)

HOME_SCOPE = (
    "**What it does**\n"
    "- marks probable fracture regions on hand, leg, hip and shoulder radiographs;\n"
    "- reads JPEG, PNG (8 and 16 bit) and DICOM files, several at once, and can show the models side by side;\n"
    "- lets you download the annotated image, the mask and the findings as JSON "
    "(and, for a DICOM upload, the result as a DICOM Secondary Capture).\n\n"
    "**What it does not do**\n"
    "- it does not diagnose, grade or classify fractures, and it knows nothing about the patient;\n"
    "- it learned from FracAtlas (hand, leg, hip and shoulder X-rays from three hospitals in Bangladesh) and, "
    "for the Lite0-UNet, the encoder-decoder and their ensemble, also from Bone Fracture Detection (upper-limb X-rays from public "
    "collections); other "
    "body parts, CT or MRI give meaningless marks;\n"
    "- it does not clear an X-ray: *no finding* means that nothing reached the threshold, and at the default "
    "thresholds the models leave many fractured validation X-rays without a mark (each reading says how many);\n"
    "- X-rays unlike the training images (other hospitals or devices, children, orthopaedic hardware, photos "
    "of a screen) may do worse; results on images far from the training X-rays carry a warning."
)

LIMITS = (
    "- **Limits:** FracAtlas is one country, three hospitals and their devices; the second source (Lite0-UNet, "
    "encoder-decoder, their ensemble) adds upper-limb X-rays only; no spine or skull, no CT/MRI. "
    "Subtle or overlapping fractures are outlined less consistently than obvious ones.\n"
    "- **Models:** small. The U-Net and the encoder-decoder (about 1.5–2 million parameters) have no "
    "pre-training on other pictures: the U-Net learned from FracAtlas alone, the encoder-decoder from FracAtlas "
    "and then briefly from the second source, which it still marks poorly; the Lite0-UNet (3.8 million) starts from an "
    "encoder pre-trained on everyday photos (ImageNet), learned from both X-ray sources and then from the "
    "ensemble's maps; the ensemble, the "
    "default, averages the maps of the Lite0-UNet (three quarters) and the encoder-decoder (one quarter). "
    "Hairline fractures may be below what they resolve.\n"
    "- **Unfamiliar X-rays:** other hospitals and devices, children, orthopaedic hardware or photos of a "
    "screen may do worse than the figures here. Results on images far from the training X-rays carry a "
    "warning, *unlike the training images*."
)

METRICS_EXPLAINED = """
- **Dice** and **IoU** (Jaccard): overlap of the marked region with the annotated outline,
  per fractured image, 1 = perfect. Dice weighs the overlap twice, so Dice ≥ IoU.
- **Box AP@50 / AP@25**: how well the numbered boxes find the annotated fractures (a box counts
  when it overlaps a true box by at least 50 % / 25 %), over all score levels.
- **ROC-AUC, sensitivity, specificity**: the image-level question *fracture or not*. ROC-AUC uses
  the image score over all thresholds (0.5 = chance); sensitivity = share of fractured images
  with a finding, specificity = share of fracture-free images left without one.
- **False findings per fracture-free image**: boxes drawn on images without any fracture, on average.
- **Calibration error (ECE)**: how far the shown *fracture likelihood* is from how often a
  fracture is really there, averaged over 10 likelihood bins (0 = a likelihood of 30 % means
  3 in 10). A *score* (per box, or the highest in the image) is not a likelihood.
- **(low–high)** after a value: its 95 % interval, how far the number could move with another draw of
  test images of the same kind (a bootstrap over the images). Two models whose intervals overlap
  widely are not clearly different on this test set.
- **Pixel accuracy** is not listed: fractures cover a tiny share of the pixels, so a model that
  marks nothing is already close to 100 % "accurate". It says nothing about finding fractures.
"""
