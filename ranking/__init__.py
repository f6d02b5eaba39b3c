"""Recall channels and ANN indexes, rankers, rerankers and ranking metrics."""
