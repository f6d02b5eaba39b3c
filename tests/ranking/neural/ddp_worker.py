"""A ``torchrun`` worker for tests/ranking/neural/test_neural.py: train DeepFM on a field interaction under DDP and
write this process's final weights and test predictions to ``<out>/rank<r>.npz``."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from rankpipe.ranking.neural.deepfm import DeepFM
from rankpipe.ranking.neural.train import TrainConfig, predict_logits, train_binary


def main(out: str) -> None:
    rng = np.random.default_rng(3)
    sparse = np.stack([rng.integers(0, 6, 6000), rng.integers(0, 6, 6000), rng.integers(0, 4, 6000)], axis=1)
    dense = rng.normal(size=(6000, 2)).astype(np.float32)
    labels = ((sparse[:, 0] % 2) ^ (sparse[:, 1] % 2)).astype(np.float32)
    torch.manual_seed(7)
    model = DeepFM([6, 6, 4], 2)
    result = train_binary(model, sparse[:5000], dense[:5000], labels[:5000],
                          TrainConfig(epochs=8, batch_size=128, learning_rate=5e-3, seed=7, device="cpu"), progress=False)
    weights = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    np.savez(os.path.join(out, f"rank{torch.distributed.get_rank()}.npz"), weights=weights, logits=predict_logits(model, sparse[5000:], dense[5000:]),
             labels=labels[5000:], world=torch.distributed.get_world_size(), epochs=len(result.history))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
