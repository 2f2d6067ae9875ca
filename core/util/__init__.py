"""Shared basics for every floor: labels, paths, atomic writes, validators, timelines, progress."""
