"""Graph transformations over a Keras model: each returns a new model and never changes its input."""
