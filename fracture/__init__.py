"""FracAtlas data set code: reading the layout, splits, masks and the training pipeline."""
