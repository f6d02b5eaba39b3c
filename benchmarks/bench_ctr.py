"""Neural CTR models: rankpipe's DeepFM and DCN-V2 against DeepCTR-Torch's, same data, same run.

Data (CTR samples, time split: the last 20% of samples by time are the test set):

- MovieLens latest-small: one sample per rating, label ``rating >= 4``; sparse fields user, movie,
  first and second genre, the movie's release decade, the user's first tag on the movie (none if
  untagged), hour of day, weekday; dense: the movie's genre count and log(1 + the user's ratings
  before the sample) — normalized on train.
- The default synthetic world's impressions (``--world-sessions`` sessions): label click; sparse
  fields user, item, category, brand, position, search or feed, hour of day; dense: price.

Both libraries get the same fields, embedding size (``--dim``), MLP (256, 128), epochs, batch size,
Adam at 1e-3, no dropout or L2; DCN-V2 has two full-rank (matrix) cross layers in both. Prints AUC,
logloss and training samples/s (median of ``--repeats`` alternating runs) for each model and library, then as its LAST line one JSON object
with ``auc``, ``peer_auc`` and ``samples_per_s_ratio`` (rankpipe / peer) for DeepFM on MovieLens.

The peer is installed only for this benchmark, without its dependencies (it would otherwise let a
resolver replace torch): ``pip install --no-deps deepctr-torch==0.3.0``.

``--quick``: 20,000 MovieLens ratings, a 2,000-session world, one epoch, one repeat (seconds; a
test runs it), and rankpipe's models alone when the peer is not installed (``peer_auc`` null).

Usage: python benchmarks/bench_ctr.py [--epochs 3] [--batch-size 1024] [--dim 16] [--data DIR] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import log_loss, roc_auc_score  # noqa: E402

from rankpipe.pipeline.datasets import shared_data_dir  # noqa: E402


def _codes(values) -> np.ndarray:
    """Categorical values → ids 0…n-1 (over the whole frame: ids carry no label information)."""
    return pd.factorize(pd.Series(values).astype("str"))[0].astype(np.int64)


def movielens_samples(directory: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(samples sorted by time, sparse field names, dense field names) from MovieLens latest-small."""
    ratings = pd.read_csv(directory / "ratings.csv").sort_values("timestamp", kind="stable").reset_index(drop=True)
    movies = pd.read_csv(directory / "movies.csv").set_index("movieId")
    tags = pd.read_csv(directory / "tags.csv").sort_values("timestamp").drop_duplicates(["userId", "movieId"])
    genres = movies["genres"].str.split("|")
    year = movies["title"].str.extract(r"\((\d{4})\)\s*$")[0].astype(float)
    ts = pd.to_datetime(ratings["timestamp"], unit="s")
    tag = ratings.merge(tags[["userId", "movieId", "tag"]], on=["userId", "movieId"], how="left")["tag"].fillna("")
    frame = pd.DataFrame({
        "user": _codes(ratings["userId"]), "movie": _codes(ratings["movieId"]),
        "genre1": _codes(genres.str[0].reindex(ratings["movieId"]).to_numpy()),
        "genre2": _codes(genres.str[1].reindex(ratings["movieId"]).fillna("").to_numpy()),
        "decade": _codes((year.reindex(ratings["movieId"]) // 10).fillna(-1).to_numpy()),
        "tag": _codes(tag.to_numpy()), "hour": ts.dt.hour.to_numpy(), "weekday": ts.dt.day_of_week.to_numpy(),
        "n_genres": genres.str.len().reindex(ratings["movieId"]).to_numpy(dtype=np.float32),
        "user_history": np.log1p(ratings.groupby("userId").cumcount().to_numpy()).astype(np.float32),
        "label": (ratings["rating"] >= 4).astype(np.float32).to_numpy(),
    })
    return frame, ["user", "movie", "genre1", "genre2", "decade", "tag", "hour", "weekday"], ["n_genres", "user_history"]


def world_samples(n_sessions: int) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(impressions sorted by time, sparse field names, dense field names) from the synthetic world."""
    from rankpipe.pipeline import schema as S
    from rankpipe.pipeline.config import SyntheticConfig
    from rankpipe.pipeline.datasets.synthetic import generate

    world = generate(SyntheticConfig(n_sessions=n_sessions), seed=42)
    events = world.events.sort_values(S.TS, kind="stable")
    shown = events[events[S.EVENT] == "impression"][[S.REQUEST_ID, S.USER_ID, S.ITEM_ID, S.POSITION, S.QUERY, S.TS]]
    clicked = events.loc[events[S.EVENT] != "impression", [S.REQUEST_ID, S.ITEM_ID]].drop_duplicates().assign(label=1.0)
    shown = shown.merge(clicked, on=[S.REQUEST_ID, S.ITEM_ID], how="left").fillna({"label": 0.0})
    items = world.items.set_index(S.ITEM_ID)
    frame = pd.DataFrame({
        "user": _codes(shown[S.USER_ID]), "item": _codes(shown[S.ITEM_ID]),
        "category": _codes(items[S.CATEGORY].reindex(shown[S.ITEM_ID]).to_numpy()),
        "brand": _codes(items["brand"].reindex(shown[S.ITEM_ID]).to_numpy()),
        "position": shown[S.POSITION].fillna(-1).astype(np.int64).to_numpy(), "search": shown[S.QUERY].notna().astype(np.int64).to_numpy(),
        "hour": pd.to_datetime(shown[S.TS]).dt.hour.to_numpy(),
        "price": np.log1p(items["price"].reindex(shown[S.ITEM_ID]).to_numpy(dtype=np.float32)),
        "label": shown["label"].to_numpy(dtype=np.float32),
    })
    frame["position"] = _codes(frame["position"])
    return frame.reset_index(drop=True), ["user", "item", "category", "brand", "position", "search", "hour"], ["price"]


def _split(frame: pd.DataFrame, dense: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = int(len(frame) * 0.8)
    train, test = frame.iloc[:cut].copy(), frame.iloc[cut:].copy()
    for column in dense:  # normalized with train's statistics
        mean, std = train[column].mean(), train[column].std() or 1.0
        train[column], test[column] = (train[column] - mean) / std, (test[column] - mean) / std
    return train, test


def _scores(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(roc_auc_score(labels, p)), float(log_loss(labels, p))


def run_rankpipe(name: str, train, test, sparse, dense, cardinalities, args) -> dict:
    from rankpipe.ranking.neural.dcnv2 import DCNv2, DCNv2Config
    from rankpipe.ranking.neural.deepfm import DeepFM, DeepFMConfig
    from rankpipe.ranking.neural.train import TrainConfig, predict_logits, train_binary

    torch.manual_seed(args.seed)
    model = (DeepFM(cardinalities, len(dense), DeepFMConfig(args.dim, (256, 128), 0.0)) if name == "deepfm"
             else DCNv2(cardinalities, len(dense), DCNv2Config(embedding_dim=args.dim, cross_layers=2, hidden=(256, 128), dropout=0.0)))
    started = time.perf_counter()
    train_binary(model, train[sparse].to_numpy(), train[dense].to_numpy(np.float32), train["label"].to_numpy(copy=True),
                 TrainConfig(args.epochs, args.batch_size, 1e-3, seed=args.seed, device="cpu"), progress=False)
    seconds = time.perf_counter() - started
    logits = predict_logits(model, test[sparse].to_numpy(), test[dense].to_numpy(np.float32))
    auc, loss = _scores(test["label"].to_numpy(), 1 / (1 + np.exp(-logits)))
    return {"auc": auc, "logloss": loss, "samples_per_s": len(train) * args.epochs / seconds}


def run_peer(name: str, train, test, sparse, dense, cardinalities, args) -> dict:
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import DCN, DeepFM

    columns = [SparseFeat(f, c, embedding_dim=args.dim) for f, c in zip(sparse, cardinalities)] + [DenseFeat(f, 1) for f in dense]
    common = dict(dnn_hidden_units=(256, 128), l2_reg_linear=0.0, l2_reg_embedding=0.0, l2_reg_dnn=0.0, dnn_dropout=0.0,
                  seed=args.seed, task="binary", device="cpu")
    model = DeepFM(columns, columns, **common) if name == "deepfm" else DCN(columns, columns, cross_num=2, cross_parameterization="matrix", **common)
    model.compile("adam", "binary_crossentropy")
    inputs = {f: train[f].to_numpy() for f in sparse + dense}
    started = time.perf_counter()
    model.fit(inputs, train["label"].to_numpy(), batch_size=args.batch_size, epochs=args.epochs, verbose=0, shuffle=True)
    seconds = time.perf_counter() - started
    probabilities = model.predict({f: test[f].to_numpy() for f in sparse + dense}, batch_size=65536).ravel()
    auc, loss = _scores(test["label"].to_numpy(), probabilities)
    return {"auc": auc, "logloss": loss, "samples_per_s": len(train) * args.epochs / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1024)
    parser.add_argument("--world-sessions", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library and model, alternating; the median speed is reported")
    parser.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data directory (default ../shared/data)")
    parser.add_argument("--quick", action="store_true", help="20,000 MovieLens ratings, a 2,000-session world, one epoch and repeat; the peer only if installed")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats, args.world_sessions = 1, 1, 2000
    if args.data is None or not (args.data / "movielens-latest-small").is_dir():
        raise SystemExit("MovieLens latest-small not found: pass --data DIR (holding movielens-latest-small) or set RANKPIPE_SHARED_DATA")
    has_peer = importlib.util.find_spec("deepctr_torch") is not None
    if not has_peer and not args.quick:
        raise SystemExit("the peer is not installed: pip install --no-deps deepctr-torch==0.3.0 (or run --quick, which leaves it out)")
    torch.set_num_threads(torch.get_num_threads())  # both libraries share the same thread pool
    movielens = movielens_samples(args.data / "movielens-latest-small")
    datasets = {"movielens": movielens if not args.quick else (movielens[0].iloc[:20000], *movielens[1:]), "world": world_samples(args.world_sessions)}
    libraries = (run_rankpipe, run_peer) if has_peer else (run_rankpipe,)
    results = {}
    for data_name, (frame, sparse, dense) in datasets.items():
        train, test = _split(frame, dense)
        cardinalities = [int(frame[f].max()) + 1 for f in sparse]
        # Untimed warm-up of both libraries: the first model of a process pays for torch's thread
        # pool and allocator, and whichever ran first would be charged for it.
        warm = argparse.Namespace(**{**vars(args), "epochs": 1})
        for runner in libraries:
            runner("deepfm", train.iloc[:20000], test.iloc[:2000], sparse, dense, cardinalities, warm)
        print(f"{data_name}: {len(train):,} train / {len(test):,} test samples, positive rate {frame['label'].mean():.3f}")
        for model in ("deepfm", "dcnv2"):
            # Alternate the libraries --repeats times and keep the median speed: on a shared
            # 2-core machine the load drifts, and one run each would credit the drift to a library.
            runs = [tuple(runner(model, train, test, sparse, dense, cardinalities, args) for runner in libraries) for _ in range(args.repeats)]
            ours, peer = ({**runs[-1][i], "samples_per_s": float(np.median([r[i]["samples_per_s"] for r in runs]))} if i < len(libraries) else None
                          for i in (0, 1))
            results[(data_name, model)] = (ours, peer)
            for library, r in (("rankpipe", ours), ("deepctr-torch", peer)):
                if r is not None:
                    print(f"  {model:7s} {library:14s} auc {r['auc']:.4f}  logloss {r['logloss']:.4f}  {r['samples_per_s']:>10,.0f} samples/s")
            if peer is not None:
                print(f"  {model:7s} ratio rankpipe/peer samples/s {ours['samples_per_s'] / peer['samples_per_s']:.2f}", flush=True)
    ours, peer = results[("movielens", "deepfm")]
    dcn, _ = results[("movielens", "dcnv2")]
    print(json.dumps({"auc": round(ours["auc"], 4), "dcnv2_auc": round(dcn["auc"], 4), "peer_auc": None if peer is None else round(peer["auc"], 4),
                      "samples_per_s_ratio": None if peer is None else round(ours["samples_per_s"] / peer["samples_per_s"], 2)}))


if __name__ == "__main__":
    main()
