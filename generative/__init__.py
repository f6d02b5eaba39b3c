"""Query suggestion (prefix index, character transformer, sessions) and training-data augmentation
(generated queries for cold items, a tabular VAE)."""
