"""The bedside path, torch-free.

capture -> face -> crop/quality -> AU -> scoring (ONNX Runtime) -> smoothing -> alarms ->
session, driven by the engine and the headless monitor.
"""
