"""Point-in-time feature engineering: windowed statistics, smoothing, text match, embeddings."""
