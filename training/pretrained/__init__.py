"""Weights that come from elsewhere: readers of foreign weight files and their port to our Keras builders."""
