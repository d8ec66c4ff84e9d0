"""Training: labelled data, LightGBM with calibration, evaluation gate, atomic publish."""
