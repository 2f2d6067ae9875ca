"""Model files: downloads, the installed and shipped models, the deployed-model registry."""
