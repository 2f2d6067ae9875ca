"""Research: datasets, splits, training, calibration, metrics, CV, reproduce, export, reports."""
