"""The background half of the flywheel: curation, datasets, training, evaluation, promotion."""
