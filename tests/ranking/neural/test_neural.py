"""Neural CTR layers against NumPy references, and the training loop's guarantees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from rankpipe.features.embeddings import BEHAVIOUR_TARGET, behaviour_columns
from rankpipe.ranking.metrics import ndcg_at_k
from rankpipe.ranking.neural.dcnv2 import CrossNetV2, DCNv2
from rankpipe.ranking.neural.deepfm import DeepFM, DeepFMConfig
from rankpipe.ranking.neural.esmm import esmm_loss
from rankpipe.ranking.neural.lambdaloss import lambdaloss
from rankpipe.ranking.neural.listnet import listnet_loss
from rankpipe.ranking.neural.ranker import DINRanker, ESMMRanker
from rankpipe.ranking.neural.train import TrainConfig, list_rows, load_checkpoint, predict_logits, save_checkpoint, train_binary
from rankpipe.ranking.rankers import make_ranker


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
    low = CrossNetV2(6, 2, rank=2)  # W = U V: the same formula with a rank-2 W
    x = x0
    for layer in low.layers:
        V, U, b = layer[0].weight.detach().numpy(), layer[1].weight.detach().numpy(), layer[1].bias.detach().numpy()
        x = x0 * (x @ V.T @ U.T + b) + x
    with torch.no_grad():
        np.testing.assert_allclose(low(torch.as_tensor(x0)).numpy(), x, rtol=1e-5, atol=1e-6)


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


# ---------------------------------------------------------------------------------- listwise losses
def _padded_lists(seed: int, n_lists: int = 6, longest: int = 7):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, longest + 1, n_lists)
    mask = np.arange(longest)[None, :] < lengths[:, None]
    scores = np.where(mask, rng.normal(size=(n_lists, longest)), 0.0)
    labels = np.where(mask, rng.integers(0, 4, (n_lists, longest)), 0).astype(float)
    return scores, labels, mask


def _torch(*arrays):
    return [torch.as_tensor(a) if a.dtype == bool else torch.as_tensor(a, dtype=torch.float64) for a in arrays]


def test_listnet_matches_a_loop_over_each_list():
    scores, labels, mask = _padded_lists(0)
    expected = []
    for s, y, m in zip(scores, labels, mask):  # slow reference: one list at a time, padding dropped
        s, y = s[m], y[m]
        target = np.exp(y) / np.exp(y).sum()
        log_p = s - np.log(np.exp(s).sum())
        expected.append(-(target * log_p).sum())
    got = listnet_loss(*_torch(scores, labels, mask))
    np.testing.assert_allclose(float(got), np.mean(expected), rtol=1e-6)


def _lambdaloss_reference(scores, labels, mask, sigma=1.0, mu=10.0):
    """NDCG-Loss2++ as the paper writes it, one list and one pair at a time."""
    total = []
    for s, y, m in zip(scores, labels, mask):
        s, y = s[m], y[m]
        n = len(s)
        rank = np.empty(n, int)
        rank[np.argsort(-s, kind="stable")] = np.arange(1, n + 1)
        D = lambda r: np.log2(1 + r)  # noqa: E731
        max_dcg = max(sum((2 ** g - 1) / D(r) for r, g in enumerate(sorted(y, reverse=True), start=1)), 1e-10)
        G = (2 ** y - 1) / max_dcg
        loss = 0.0
        for i in range(n):
            for j in range(n):
                if y[i] > y[j]:
                    gap = abs(rank[i] - rank[j])
                    delta = abs(1 / D(gap) - 1 / D(gap + 1))
                    w = (mu * delta + abs(1 / D(rank[i]) - 1 / D(rank[j]))) * abs(G[i] - G[j])
                    loss += -w * np.log2(1 / (1 + np.exp(-sigma * (s[i] - s[j]))))
        total.append(loss)
    return np.mean(total)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lambdaloss_matches_the_papers_pairwise_sum(seed):
    scores, labels, mask = _padded_lists(seed)
    got = lambdaloss(*_torch(scores, labels, mask))
    np.testing.assert_allclose(float(got), _lambdaloss_reference(scores, labels, mask), rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=8).filter(lambda g: len(set(g)) > 1))
def test_listwise_losses_prefer_the_ideal_order(grades):
    # Scores that sort a list by its grades cost less than scores that sort it backwards.
    y = np.array([grades], dtype=float)
    mask = np.ones_like(y, dtype=bool)
    ideal = y + 0.01 * np.arange(y.shape[1])[::-1]  # strictly ordered by grade
    for loss in (listnet_loss, lambdaloss):
        good, bad = (float(loss(*_torch(4 * s, y, mask))) for s in (ideal, -ideal))
        assert good < bad, (loss.__name__, good, bad)


def test_list_rows_groups_rows_by_list_with_padding():
    rows = list_rows(np.array(["b", "a", "b", "c", "a", "b"]))
    assert rows.tolist() == [[0, 2, 5], [1, 4, -1], [3, -1, -1]]  # lists in order of first appearance


@pytest.mark.parametrize("nn_loss", ["listnet", "lambdaloss"])
def test_listwise_training_learns_to_rank_deterministically(nn_loss):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(4000, 3)), columns=["a", "b", "c"])
    y = np.clip(np.round(X["a"] + 0.3 * rng.normal(size=4000) + 1), 0, 3).astype(int).to_numpy()
    g = np.repeat(np.arange(400), 10)
    fit = lambda: make_ranker("deepfm", nn_loss=nn_loss, nn_epochs=4, nn_batch_size=200, device="cpu", progress=False).fit(  # noqa: E731
        X[:3000], y[:3000], g[:3000], X[3000:], y[3000:], g[3000:])
    ranker = fit()
    scores = ranker.predict(X[3000:])
    by_truth = ndcg_at_k(g[3000:], X["a"][3000:], y[3000:], 10)  # the feature the grades follow
    by_chance = ndcg_at_k(g[3000:], np.random.default_rng(1).normal(size=1000), y[3000:], 10)
    assert ndcg_at_k(g[3000:], scores, y[3000:], 10) > by_truth - 0.02 > by_chance + 0.1
    np.testing.assert_array_equal(fit().predict(X[3000:]), scores)


# ---------------------------------------------------------------------------------------- ESMM
def test_esmm_loss_is_ctr_plus_ctcvr_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 2)) * 3
    targets = np.stack([rng.integers(0, 2, 50), rng.integers(0, 2, 50)], axis=1).astype(float)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    p_ctr, p_ctcvr = sig(logits[:, 0]), sig(logits[:, 0]) * sig(logits[:, 1])
    bce = lambda p, t: -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))  # noqa: E731
    got = esmm_loss(torch.as_tensor(logits), torch.as_tensor(targets, dtype=torch.float32))
    np.testing.assert_allclose(float(got), bce(p_ctr, targets[:, 0]) + bce(p_ctcvr, targets[:, 1]), rtol=1e-5)


def test_esmm_separates_what_drives_clicks_from_what_drives_conversions():
    # Clicks follow feature a; conversions, among clicks, follow feature b only.
    rng = np.random.default_rng(1)
    n = 20000
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    click = rng.random(n) < 1 / (1 + np.exp(-2 * X["a"].to_numpy()))
    convert = click & (rng.random(n) < 1 / (1 + np.exp(-3 * X["b"].to_numpy() + 1)))
    y = click.astype(int) + 2 * convert  # grades 0, 1, 3
    ranker = ESMMRanker(nn_epochs=4, nn_batch_size=512, device="cpu", progress=False).fit(X, y, np.repeat(np.arange(n // 20), 20))
    outputs = predict_logits(ranker.model_, *ranker._model_inputs(X))
    ctr, cvr = outputs[:, 0], outputs[:, 1]
    assert np.corrcoef(ctr, X["a"])[0, 1] > 0.8 and abs(np.corrcoef(ctr, X["b"])[0, 1]) < 0.2
    assert np.corrcoef(cvr, X["b"])[0, 1] > 0.8 and abs(np.corrcoef(cvr, X["a"])[0, 1]) < 0.2


def test_esmm_refuses_a_listwise_loss():
    with pytest.raises(ValueError, match="nn_loss"):
        ESMMRanker(nn_loss="listnet", progress=False).fit(pd.DataFrame({"a": [0.0, 1.0]}), np.array([0, 1]), np.array([0, 0]))


# ----------------------------------------------------------------------------------------- DIN
def _behaviour_world(seed: int, n: int = 12000, length: int = 6):
    """Items 1..60 in 6 categories; a user clicks a candidate only when her history holds its category."""
    rng = np.random.default_rng(seed)
    category = lambda items: (items - 1) % 6  # noqa: E731
    target = rng.integers(1, 61, n)
    history = rng.integers(1, 61, (n, length))
    history[rng.random((n, length)) < 0.3] = 0  # padding: shorter histories
    liked = (category(history) == category(target)[:, None]) & (history > 0)
    y = (liked.any(axis=1) & (rng.random(n) < 0.9)).astype(int)
    X = pd.DataFrame(history, columns=behaviour_columns(length)[1:])
    X.insert(0, BEHAVIOUR_TARGET, target)
    X["noise"] = rng.normal(size=n)
    return X, y, np.repeat(np.arange(n // 10), 10), liked


def test_din_attends_to_the_history_items_that_match_the_candidate(tmp_path):
    X, y, g, liked = _behaviour_world(0)
    Xv, yv, gv, _ = _behaviour_world(1, n=3000)
    fit = lambda columns: DINRanker(nn_epochs=8, nn_patience=8, nn_batch_size=512, nn_learning_rate=3e-3, device="cpu",  # noqa: E731
                                    progress=False).fit(X[columns], y, g, Xv[columns], yv, gv)
    ranker = fit(list(X.columns))
    scores = ranker.predict(Xv)
    assert roc_auc_score(yv, scores) > 0.9
    with pytest.warns(UserWarning, match="no behaviour columns"):  # the fields alone carry nothing here
        blind = fit(["noise"])
    assert roc_auc_score(yv, blind.predict(Xv)) < 0.55
    without = ranker.feature_importance()
    assert without.index[0] in (BEHAVIOUR_TARGET, "behaviour_history") and without["noise"] < without["behaviour_history"]
    # The attention weights are larger on matching history items than on the others.
    _, _, target, history = (torch.as_tensor(a) for a in ranker._model_inputs(X[:2000]))
    with torch.no_grad():
        weights = ranker.model_.attention.weights(ranker.model_.items(target), ranker.model_.items(history), (history > 0).float()).numpy()
    real = X[behaviour_columns(6)[1:]].to_numpy()[:2000] > 0
    assert weights[liked[:2000]].mean() > weights[real & ~liked[:2000]].mean() + 0.1
    ranker.save(tmp_path)
    np.testing.assert_allclose(DINRanker.load(tmp_path).predict(Xv), scores, rtol=0, atol=1e-12)


def test_torchrun_trains_one_model_across_processes_with_ddp(tmp_path):
    # Two CPU processes (gloo): each takes half of every epoch's batches, DDP averages the gradients,
    # so both end with the same weights, and the model still learns the interaction.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    assert int(ranks[0]["world"]) == 2
    np.testing.assert_array_equal(ranks[0]["weights"], ranks[1]["weights"])
    accuracy = float(((ranks[0]["logits"] > 0) == ranks[0]["labels"].astype(bool)).mean())
    assert accuracy > 0.95, accuracy
