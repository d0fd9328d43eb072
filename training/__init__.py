"""The engine behind ``train.py``: one run (``trainer``), its recipe, callbacks and records
(``recipe``, ``callbacks``, ``history``), shipping and weight averages (``ship``, ``soup``), and the
ImageNet weights import for the Lite0-UNet encoder (``pretrained``)."""
