"""Recall channels (ranking/recall/) and ANN indexes, rankers, rerankers and ranking metrics."""
