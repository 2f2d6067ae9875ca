"""The Qt desktop app: a thin shell over painmon.core (windows, widgets, workers)."""
