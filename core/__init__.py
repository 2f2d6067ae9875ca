"""Everything that works without a screen: faces, datasets, splits, training, metrics, engine."""
