"""What a prediction is and what it says: findings and the finding rule, the result object,
the reading (state, likelihood, words), calibration, the 'unlike the training images' check
and the model features it uses, the model manifest and the model card. No UI; the inference
loop itself is ``prediction.py`` at the root."""
