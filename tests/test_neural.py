"""Neural CTR layers against NumPy references, and the training loop's guarantees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ranking.neural.dcnv2 import CrossNetV2, DCNv2
from ranking.neural.deepfm import DeepFM, DeepFMConfig
from ranking.neural.train import TrainConfig, load_checkpoint, predict_logits, save_checkpoint, train_binary


def _fields(seed: int, n: int = 64, cardinalities=(5, 7, 3)):
    rng = np.random.default_rng(seed)
    sparse = np.stack([rng.integers(0, c, n) for c in cardinalities], axis=1)
    return sparse, rng.normal(size=(n, 2)).astype(np.float32)


def test_deepfm_second_order_is_the_sum_over_field_pairs():
    torch.manual_seed(0)
    model = DeepFM([5, 7, 3], 2, DeepFMConfig(embedding_dim=4, hidden=(8,), dropout=0.0)).eval()
    sparse, dense = _fields(0)
    with torch.no_grad():
        table = model.embedding.table.weight.numpy()
        rows = sparse + np.array([0, 5, 12])  # each field's ids follow the fields before it
        v, first = table[rows][:, :, :4], table[rows][:, :, 4]  # (B, F, K), (B, F)
        linear = first.sum(axis=1) + model.dense_linear(torch.as_tensor(dense)).squeeze(-1).numpy()
        deep = model.deep_out(model.deep(torch.cat([torch.as_tensor(v).flatten(1), torch.as_tensor(dense)], 1))).squeeze(-1).numpy()
        got = model(torch.as_tensor(sparse), torch.as_tensor(dense)).numpy()
    pairs = sum((v[:, i] * v[:, j]).sum(axis=1) for i in range(3) for j in range(i + 1, 3))  # slow reference
    np.testing.assert_allclose(got, linear + pairs + deep, rtol=1e-5, atol=1e-6)


def test_cross_layer_matches_its_formula():
    torch.manual_seed(1)
    cross = CrossNetV2(6, 2)
    x0 = np.random.default_rng(1).normal(size=(10, 6)).astype(np.float32)
    x = x0
    for layer in cross.layers:
        W, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
        x = x0 * (x @ W.T + b) + x
    with torch.no_grad():
        np.testing.assert_allclose(cross(torch.as_tensor(x0)).numpy(), x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("architecture", [DeepFM, DCNv2])
def test_training_learns_a_field_interaction_deterministically_and_checkpoints_round_trip(architecture, tmp_path):
    # The label is an interaction (XOR of two fields' parity) no single field predicts.
    rng = np.random.default_rng(3)
    sparse = np.stack([rng.integers(0, 6, 6000), rng.integers(0, 6, 6000), rng.integers(0, 4, 6000)], axis=1)
    dense = rng.normal(size=(6000, 2)).astype(np.float32)
    labels = ((sparse[:, 0] % 2) ^ (sparse[:, 1] % 2)).astype(np.float32)
    config = TrainConfig(epochs=8, batch_size=256, learning_rate=5e-3, seed=7, device="cpu")

    def fitted():
        torch.manual_seed(7)
        model = architecture([6, 6, 4], 2)
        train_binary(model, sparse[:5000], dense[:5000], labels[:5000], config, progress=False)
        return model

    model = fitted()
    logits = predict_logits(model, sparse[5000:], dense[5000:])
    accuracy = float(((logits > 0) == labels[5000:].astype(bool)).mean())
    assert accuracy > 0.95, accuracy
    np.testing.assert_array_equal(predict_logits(fitted(), sparse[5000:], dense[5000:]), logits)  # seeded: identical
    save_checkpoint(tmp_path / "m.pt", model, {"cardinalities": [6, 6, 4]})
    state, config_back = load_checkpoint(tmp_path / "m.pt")
    again = architecture(config_back["cardinalities"], 2)
    again.load_state_dict(state)
    np.testing.assert_array_equal(predict_logits(again, sparse[5000:], dense[5000:]), logits)


def test_early_stopping_keeps_the_best_epoch():
    torch.manual_seed(0)
    model = DeepFM([4], 1, DeepFMConfig(embedding_dim=2, hidden=(4,)))
    sparse, dense = np.zeros((100, 1), dtype=np.int64), np.zeros((100, 1), dtype=np.float32)
    scores = iter([0.3, 0.9, 0.5, 0.4, 0.8])
    result = train_binary(model, sparse, dense, np.zeros(100, dtype=np.float32), TrainConfig(epochs=5, patience=2, device="cpu"),
                          valid_score=lambda m: next(scores), progress=False)
    assert result.best_epoch == 2 and result.best_score == 0.9 and len(result.history) == 4  # stopped after two worse epochs


def test_cuda_asked_for_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="CUDA"):
        train_binary(DeepFM([2], 0), np.zeros((4, 1), dtype=np.int64), np.zeros((4, 0), dtype=np.float32), np.zeros(4, dtype=np.float32),
                     TrainConfig(epochs=1, device="cuda"), progress=False)
