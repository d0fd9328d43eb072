"""Shared plumbing of the command lines (``predict.py``, ``evaluate.py``, ``train.py``): argument
helpers, TensorFlow log silencing, and the Ray batch engine behind ``predict.py --engine ray``."""
