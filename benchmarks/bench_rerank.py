"""Reranking speed: DPP's fast greedy MAP and PRM's batch inference, each beside a straightforward NumPy reference.

- DPP: select 10 of 200 candidates per list (32-dim embeddings plus category and brand, θ = 0.9) on
  one core (BLAS limited to one thread). ``dpp_ms_per_list``: all lists stepped together in
  batches (how the rerank stage runs), ``dpp_single_ms``: one list at a time. The reference is greedy
  MAP the slow way (:func:`~rankpipe.ranking.rerank.dpp.greedy_map_reference`: each step recomputes
  the determinant of every candidate's submatrix); both pick the same items, which is checked.
- PRM: the default network (dim 32, 2 heads, 1 layer) over the top 20 of each list, batch inference
  on 2 cores (``prm_lists_per_s``). The reference is the same forward pass written in plain NumPy
  from the ``state_dict`` (:func:`numpy_prm_forward`); the outputs are checked equal.

Target (the issue): ``dpp_ms_per_list`` ≤ 1, ``prm_lists_per_s`` ≥ 10,000. Prints a summary, then as
its LAST line one JSON object.

Usage: python benchmarks/bench_rerank.py [--lists 20000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from threadpoolctl import threadpool_limits

from rankpipe.ranking.rerank.dpp import dpp_kernel, dpp_picks, greedy_map_reference
from rankpipe.ranking.rerank.prm import _torch_model

CANDIDATES, SELECT, DIMS, THETA = 200, 10, 32, 0.9
PRM_TOP, N_DENSE = 20, 5 + 2 * DIMS


def dpp_inputs(n_lists: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rel (L, P), present, unit embeddings (L, P, D), codes (L, P, 2)) of random lists."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_lists, CANDIDATES, DIMS))
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    codes = np.stack([rng.integers(0, 12, (n_lists, CANDIDATES)), rng.integers(0, 60, (n_lists, CANDIDATES))], axis=-1)
    return rng.random((n_lists, CANDIDATES)), np.ones((n_lists, CANDIDATES), bool), emb, codes


def time_dpp(n_lists: int, n_reference: int, batch: int = 500) -> dict:
    rel, present, emb, codes = dpp_inputs(n_lists)
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        picks = np.concatenate([dpp_picks(rel[i:i + batch], present[i:i + batch], THETA, SELECT, emb[i:i + batch], codes[i:i + batch])
                                for i in range(0, n_lists, batch)])
        batched = (time.perf_counter() - started) / n_lists
        started = time.perf_counter()
        for i in range(n_reference):
            dpp_picks(rel[i:i + 1], present[i:i + 1], THETA, SELECT, emb[i:i + 1], codes[i:i + 1])
        single = (time.perf_counter() - started) / n_reference
        started = time.perf_counter()
        reference = [greedy_map_reference(dpp_kernel(rel[i], THETA, emb[i], codes[i]), SELECT) for i in range(n_reference)]
        slow = (time.perf_counter() - started) / n_reference
    same = all(list(picks[i]) == reference[i] for i in range(n_reference))
    return {"dpp_ms_per_list": batched * 1000, "dpp_single_ms": single * 1000, "dpp_reference_ms": slow * 1000,
            "dpp_speedup": slow / batched, "dpp_same_as_reference": same}


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def numpy_prm_forward(state: dict[str, np.ndarray], dense: np.ndarray, ids: np.ndarray, heads: int) -> np.ndarray:
    """PRM's forward pass in plain NumPy from its ``state_dict`` (eval mode: no dropout), one encoder layer."""
    linear = lambda x, name: x @ state[f"{name}.weight"].T + state[f"{name}.bias"]
    padding = ids[..., 0] < 0
    safe = np.clip(ids, 0, None)
    tokens = (linear(np.maximum(linear(dense, "dense.0"), 0), "dense.2") + state["category.weight"][safe[..., 0]]
              + state["brand.weight"][safe[..., 1]] + state["position.weight"][safe[..., 2]])
    x = tokens
    p = "encoder.layers.0"
    b, n, d = x.shape
    qkv = x @ state[f"{p}.self_attn.in_proj_weight"].T + state[f"{p}.self_attn.in_proj_bias"]
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(b, n, heads, d // heads).transpose(0, 2, 1, 3) for i in range(3))
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads) + np.where(padding, -np.inf, 0.0)[:, None, None, :]
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = (weights @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
    x = _layer_norm(x + linear(attended, f"{p}.self_attn.out_proj"), state[f"{p}.norm1.weight"], state[f"{p}.norm1.bias"])
    x = _layer_norm(x + linear(np.maximum(linear(x, f"{p}.linear1"), 0), f"{p}.linear2"), state[f"{p}.norm2.weight"], state[f"{p}.norm2.bias"])
    hidden = np.maximum(linear(np.concatenate([x, tokens], -1), "head.0"), 0)
    out = linear(hidden, "head.2")[..., 0] + state["score_weight"] * dense[..., 1]
    return np.where(padding, 0.0, out)


def time_prm(n_lists: int, n_reference: int) -> dict:
    import torch

    torch.manual_seed(0)
    network = _torch_model(N_DENSE, 40, 240, 32, 2, 1, PRM_TOP, 0.1).eval()
    with torch.no_grad():  # a trained-looking head (a fresh one is zero: the output would be the score alone)
        for parameter in network.head.parameters():
            parameter.normal_(0, 0.1)
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(n_lists, PRM_TOP, N_DENSE)).astype(np.float32)
    ids = np.stack([rng.integers(1, 41, (n_lists, PRM_TOP)), rng.integers(1, 241, (n_lists, PRM_TOP)),
                    np.broadcast_to(np.arange(PRM_TOP), (n_lists, PRM_TOP))], axis=-1).astype(np.int64)
    torch.set_num_threads(2)
    batch = 4096
    with torch.no_grad():
        network(torch.as_tensor(dense[:batch]), torch.as_tensor(ids[:batch]))  # warm-up
        started = time.perf_counter()
        out = np.concatenate([network(torch.as_tensor(dense[i:i + batch]), torch.as_tensor(ids[i:i + batch])).numpy() for i in range(0, n_lists, batch)])
        fast = time.perf_counter() - started
    state = {k: v.numpy().astype(np.float64) for k, v in network.state_dict().items()}
    with threadpool_limits(limits=2):
        started = time.perf_counter()
        reference = np.concatenate([numpy_prm_forward(state, dense[i:min(i + batch, n_reference)].astype(np.float64), ids[i:min(i + batch, n_reference)], 2)
                                    for i in range(0, n_reference, batch)])
        slow = time.perf_counter() - started
    return {"prm_lists_per_s": n_lists / fast, "prm_reference_lists_per_s": n_reference / slow, "prm_speedup": (n_lists / fast) / (n_reference / slow),
            "prm_max_abs_diff": float(np.abs(out[:n_reference] - reference).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lists", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 lists (what the test runs)")
    args = parser.parse_args()
    n = 2_000 if args.quick else args.lists
    dpp = time_dpp(n, 20 if args.quick else 100)
    prm = time_prm(n * 5, n)
    result = {**{k: (round(v, 4) if isinstance(v, float) and k != "prm_max_abs_diff" else v) for k, v in {**dpp, **prm}.items()}, "lists": n,
              "targets": {"dpp_ms_per_list": 1.0, "prm_lists_per_s": 10_000}}
    print(f"DPP select {SELECT} of {CANDIDATES}, one core: {dpp['dpp_ms_per_list']:.3f} ms/list batched, {dpp['dpp_single_ms']:.2f} ms one at a time, "
          f"reference {dpp['dpp_reference_ms']:.1f} ms ({dpp['dpp_speedup']:.0f}x); same picks: {dpp['dpp_same_as_reference']}", file=sys.stderr)
    print(f"PRM top {PRM_TOP}, 2 cores: {prm['prm_lists_per_s']:,.0f} lists/s, NumPy reference {prm['prm_reference_lists_per_s']:,.0f} lists/s "
          f"({prm['prm_speedup']:.1f}x); max |difference| {prm['prm_max_abs_diff']:.2e}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
