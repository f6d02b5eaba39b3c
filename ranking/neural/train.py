"""One training loop for the neural models on CPU, one GPU and many.

Seeded and deterministic on CPU (the batch order comes from a NumPy generator, never from torch's
global state); mixed precision (bfloat16 autocast) on CUDA; under ``torchrun`` the model is
wrapped in DistributedDataParallel and each process takes its own shard of every epoch's order.
Early stopping keeps the epoch with the best validation score. Checkpoints hold the state_dict and
the config as plain values, and load with ``weights_only=True``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class TrainConfig:
    """Epochs (at most), batch size, Adam's step and weight decay, patience in epochs, seed, device ("auto", "cpu", "cuda")."""

    epochs: int = 5
    batch_size: int = 4096
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 2
    seed: int = 42
    device: str = "auto"


@dataclass
class TrainResult:
    """The kept epoch (1-based), its validation score, and every epoch's (mean train loss, validation score)."""

    best_epoch: int
    best_score: float
    history: list[tuple[float, float]] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; an explicit ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    return torch.device(device)


def _distributed() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torchrun``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def train_binary(model: nn.Module, sparse: np.ndarray, dense: np.ndarray, labels: np.ndarray, config: TrainConfig,
                 valid_score: Callable[[nn.Module], float] | None = None, progress: bool = True, desc: str = "train") -> TrainResult:
    """Train ``model(sparse, dense) -> logits`` with binary cross-entropy on ``labels`` (0/1).

    Args:
        sparse: (N, F) int64 field ids; dense: (N, D) float32 normalized values; labels: (N,) 0/1.
        valid_score: the model → a validation score (higher is better), called after every epoch
            on rank 0; without it every epoch is kept.

    Returns:
        The :class:`TrainResult`; the model holds the best epoch's weights.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rank, world = _distributed()
    model.to(device)
    trained = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(trained.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    # The whole training set moves to the device once; batches are index slices of it.
    sparse_t = torch.as_tensor(sparse, dtype=torch.long, device=device)
    dense_t = torch.as_tensor(dense, dtype=torch.float32, device=device)
    labels_t = torch.as_tensor(labels, dtype=torch.float32, device=device)
    rng = np.random.default_rng(config.seed)
    amp = device.type == "cuda"
    best = TrainResult(best_epoch=0, best_score=-np.inf)
    best_state, stale = None, 0
    for epoch in range(1, config.epochs + 1):
        trained.train()
        order = rng.permutation(len(labels))[rank::world]  # same permutation on every process, disjoint shards
        batches = range(0, len(order), config.batch_size)
        total, seen = 0.0, 0
        for start in tqdm(batches, desc=f"{desc}: epoch {epoch}", unit="batch", disable=None if progress and rank == 0 else True, leave=False):
            idx = torch.as_tensor(order[start:start + config.batch_size], device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(trained(sparse_t[idx], dense_t[idx]).float(), labels_t[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        model.eval()
        score = float(valid_score(model)) if valid_score is not None and rank == 0 else float(epoch)
        if world > 1:  # every process must take the same early-stopping decision
            shared = torch.tensor([score], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
            torch.distributed.broadcast(shared, src=0)
            score = float(shared.item())
        best.history.append((total / max(seen, 1), score))
        if score > best.best_score:
            best.best_epoch, best.best_score, stale = epoch, score, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return best


@torch.no_grad()
def predict_logits(model: nn.Module, sparse: np.ndarray, dense: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """(N,) float64 logits, in batches, without gradients (the model stays on its device)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(sparse), batch_size):
        s = torch.as_tensor(sparse[start:start + batch_size], dtype=torch.long, device=device)
        d = torch.as_tensor(dense[start:start + batch_size], dtype=torch.float32, device=device)
        out.append(model(s, d).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def save_checkpoint(path: str | Path, model: nn.Module, config: dict) -> None:
    """The model's state_dict (on CPU) and its config (plain values only) in one file."""
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "config": config}, Path(path))


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, config) of a checkpoint; ``weights_only=True``: tensors and plain values, never code."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    return checkpoint["state_dict"], checkpoint["config"]
