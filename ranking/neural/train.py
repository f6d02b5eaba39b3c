"""One training loop for the neural models on CPU, one GPU and many.

Seeded and deterministic on CPU (the batch order comes from a NumPy generator, never from torch's
global state); mixed precision (bfloat16 autocast) on CUDA; under ``torchrun`` the model is
wrapped in DistributedDataParallel and each process takes its own shard of every epoch's order.
Batches are rows for pointwise losses, or whole lists (padded) for listwise ones (ListNet,
LambdaLoss). Early stopping keeps the epoch with the best validation score. Checkpoints hold the state_dict and
the config as plain values, and load with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
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
    """``auto`` → CUDA when present, else CPU; an explicit ``cuda`` without a GPU is an error. Under
    ``torchrun`` a bare ``cuda`` means this process's GPU (``LOCAL_RANK``)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return torch.device(device)


def _distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torchrun``. Under ``torchrun`` (WORLD_SIZE > 1 in the
    environment) the process group is joined here if the caller has not: NCCL on CUDA, gloo on CPU."""
    if not torch.distributed.is_available():
        return 0, 1
    if not torch.distributed.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def binary_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of (B,) logits against 0/1 labels (pointwise CTR)."""
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)


def list_rows(groups: np.ndarray) -> np.ndarray:
    """(n_lists, longest) int64 row indices of each list (lists in order of first appearance), -1 padded."""
    codes, _ = pd.factorize(np.asarray(groups))
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.arange(len(order)) - np.repeat(starts, sizes)  # each row's place within its list
    out = np.full((len(sizes), int(sizes.max()) if len(sizes) else 0), -1, dtype=np.int64)
    out[codes[order], position] = order
    return out


def train_model(model: nn.Module, inputs: tuple[np.ndarray, ...], targets: np.ndarray, loss: Callable, config: TrainConfig,
                groups: np.ndarray | None = None, valid_score: Callable[[nn.Module], float] | None = None,
                progress: bool = True, desc: str = "train") -> TrainResult:
    """Train ``model(*inputs) -> outputs`` to minimize ``loss``.

    Args:
        inputs: row-aligned arrays (int arrays are ids, float arrays values), passed to the model in order.
        targets: (N,) or (N, T) row-aligned targets.
        loss: pointwise ``loss(outputs, targets)`` over a batch of rows, or, with ``groups``, listwise
            ``loss(scores, labels, mask)`` over a batch of whole lists padded to (lists, longest).
        groups: (N,) list ids; given, batches are whole lists (about ``batch_size`` rows each).
        valid_score: the model → a validation score (higher is better), called after every epoch
            on rank 0; without it every epoch is kept.

    Returns:
        The :class:`TrainResult`; the model holds the best epoch's weights.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rank, world = _distributed(device)
    model.to(device)
    trained = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(trained.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    # The whole training set moves to the device once; batches are index slices of it.
    tensors = [torch.as_tensor(a, dtype=torch.long if np.issubdtype(a.dtype, np.integer) else torch.float32, device=device) for a in inputs]
    targets_t = torch.as_tensor(targets, dtype=torch.float32, device=device)
    if groups is None:
        n_units, unit_size = len(targets), config.batch_size
    else:
        lists = torch.as_tensor(list_rows(groups), device=device)
        n_units, unit_size = len(lists), max(1, int(round(config.batch_size * len(lists) / max(len(targets), 1))))
    rng = np.random.default_rng(config.seed)
    amp = device.type == "cuda"
    best = TrainResult(best_epoch=0, best_score=-np.inf)
    best_state, stale = None, 0
    for epoch in range(1, config.epochs + 1):
        trained.train()
        order = rng.permutation(n_units)
        # Same permutation on every process, disjoint equal shards: every process must take the same
        # number of steps, or DDP's gradient all-reduce waits forever (up to world - 1 units skipped per epoch).
        order = order[: len(order) - len(order) % world][rank::world]
        batches = range(0, len(order), unit_size)
        total, seen = 0.0, 0
        for start in tqdm(batches, desc=f"{desc}: epoch {epoch}", unit="batch", disable=None if progress and rank == 0 else True, leave=False):
            idx = torch.as_tensor(order[start:start + unit_size], device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                if groups is None:
                    value = loss(trained(*(t[idx] for t in tensors)), targets_t[idx])
                else:
                    rows = lists[idx]
                    rows = rows[:, : int((rows >= 0).sum(1).max())]  # as long as this batch's longest list
                    mask = rows >= 0
                    flat = rows[mask]
                    scores = torch.zeros(mask.shape, dtype=torch.float32, device=device)
                    scores = scores.masked_scatter(mask, trained(*(t[flat] for t in tensors)).float())
                    value = loss(scores, targets_t[rows.clamp(min=0)], mask)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total, seen = total + float(value.detach()) * len(idx), seen + len(idx)
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


def train_binary(model: nn.Module, sparse: np.ndarray, dense: np.ndarray, labels: np.ndarray, config: TrainConfig,
                 valid_score: Callable[[nn.Module], float] | None = None, progress: bool = True, desc: str = "train") -> TrainResult:
    """:func:`train_model` of ``model(sparse, dense) -> logits`` with binary cross-entropy on 0/1 ``labels``."""
    return train_model(model, (sparse, dense), labels, binary_loss, config, valid_score=valid_score, progress=progress, desc=desc)


@torch.no_grad()
def predict_logits(model: nn.Module, *inputs: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """The model's float64 outputs ((N,) logits, or (N, T)) for row-aligned ``inputs``, in batches,
    without gradients (the model stays on its device)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(inputs[0]), batch_size):
        batch = [torch.as_tensor(a[start:start + batch_size], dtype=torch.long if np.issubdtype(a.dtype, np.integer) else torch.float32,
                                 device=device) for a in inputs]
        out.append(model(*batch).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def save_checkpoint(path: str | Path, model: nn.Module, config: dict) -> None:
    """The model's state_dict (on CPU) and its config (plain values only) in one file."""
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "config": config}, Path(path))


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, config) of a checkpoint; ``weights_only=True``: tensors and plain values, never code."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    return checkpoint["state_dict"], checkpoint["config"]
