"""Everything that works without a screen: faces, synthetic patients, datasets, splits, training, metrics, engine."""
