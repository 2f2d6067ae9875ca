"""Bundled assets: icons, alarm tones, default settings."""
