"""Neural CTR models (torch), one per file with its config beside it, the shared layers, and the training loop."""
