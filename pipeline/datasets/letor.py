"""The ``letor`` adapter: svmlight / LETOR files with query groups, a ready feature table for ranking.

PATH holds one ``*.train`` and one ``*.test`` file (optionally ``*.vali``), each in svmlight format
(``label [qid:Q] index:value ...``), with query groups given by ``qid:`` fields or by a sibling
``<file>.query`` file of group sizes (the LightGBM layout). Each becomes a table
``qid, label, f_1 … f_n`` (feature ids as in the file). The funnel enters at the rank stage; the
evaluation uses the dataset's own test file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.pipeline.datasets.base import Dataset
from rankpipe.pipeline.datasets.config import DatasetConfig
from rankpipe.pipeline.datasets.files import files_fingerprint
from rankpipe.pipeline.graphs import LEARNING_TO_RANK, names
from rankpipe.pipeline.schema import ConfigError, ContractError

QID, LABEL = "qid", "label"
_LINE = re.compile(r"^\s*(?P<label>[-+]?\d+(\.\d*)?)(\s+qid:(?P<qid>\d+))?(\s+\d+:[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)*\s*(#.*)?$")


def _find(root: Path, suffix: str, required: bool) -> Path | None:
    found = sorted(root.glob(f"*.{suffix}"))
    if len(found) > 1:
        raise ContractError(str(root), None, f"one *.{suffix} file", f"{len(found)}: {[p.name for p in found]}")
    if not found:
        if required:
            raise ContractError(str(root), None, f"a *.{suffix} svmlight file", "none")
        return None
    return found[0]


def _first_bad_line(path: Path) -> tuple[int, str, str]:
    """(line number, line, what is wrong) of the first line that is not valid svmlight; only run after a parse failed."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, repr(raw[:80]), f"bytes that are not UTF-8 ({exc.reason})"
            if line.strip() and not _LINE.match(line):
                return number, line.strip()[:120], "a line that is not 'label [qid:Q] index:value ...'"
    return 0, "", "an unreadable file"


def read_svmlight(path: Path) -> pd.DataFrame:
    """One svmlight file (+ optional ``.query`` sibling) → ``qid, label, f_1 … f_n``.

    Raises:
        ContractError: naming the file, the line and what was wrong (malformed line, bad UTF-8,
            non-integer or negative label, non-contiguous qids, group sizes that do not add up).
    """
    from sklearn.datasets import load_svmlight_file

    try:
        X, y, qid = load_svmlight_file(str(path), query_id=True, zero_based=False)
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        number, line, what = _first_bad_line(path)
        raise ContractError(path.name, None, "svmlight lines 'label [qid:Q] index:value ...'",
                            f"{what} at line {number}: {line!r}" if number else f"{what} ({exc})") from None
    labels = np.asarray(y)
    bad = (labels < 0) | (labels != np.round(labels))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ContractError(path.name, LABEL, "integer relevance grades >= 0", f"{len(rows)} other labels, first at line {rows[0] + 1}: {labels[rows[0]]}",
                            pd.DataFrame({"line": rows[:5] + 1, LABEL: labels[rows[:5]]}))
    query_file = path.with_name(path.name + ".query")
    if query_file.exists():
        sizes = _read_group_sizes(query_file, len(labels))
        qid = np.repeat(np.arange(len(sizes)), sizes)
    elif not np.any(qid):
        raise ContractError(path.name, QID, f"qid: fields or a {query_file.name} file of group sizes", "neither")
    else:
        # Rows of a query must be contiguous: a qid that reappears after another one is a broken file.
        starts = np.flatnonzero(np.r_[True, qid[1:] != qid[:-1]])
        seen, counts = np.unique(qid[starts], return_counts=True)
        if (counts > 1).any():
            first_repeat = seen[counts > 1][0]
            lines = starts[qid[starts] == first_repeat] + 1
            raise ContractError(path.name, QID, "the rows of each qid together", f"qid {first_repeat} starts again at line {lines[1]} (first at line {lines[0]})")
    dense = np.asarray(X.todense(), dtype=np.float32)
    table = pd.DataFrame(dense, columns=[f"f_{j + 1}" for j in range(dense.shape[1])])
    table.insert(0, LABEL, labels.astype(np.int32))
    table.insert(0, QID, np.asarray(qid, dtype=np.int64))
    return table


def _read_group_sizes(path: Path, n_rows: int) -> np.ndarray:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(path.name, None, "UTF-8 text", f"bytes that are not UTF-8 ({exc.reason})") from None
    sizes = []
    for number, line in enumerate(text.splitlines(), 1):  # one line per query group, not per row
        if not line.strip():
            continue
        if not line.strip().isdigit() or int(line) <= 0:
            raise ContractError(path.name, None, "one positive integer group size per line", f"{line.strip()!r} at line {number}")
        sizes.append(int(line))
    if sum(sizes) != n_rows:
        raise ContractError(path.name, None, f"group sizes adding up to the {n_rows} rows of the data file", f"they add up to {sum(sizes)}")
    return np.asarray(sizes)


def align_features(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Give every table the same feature columns (files may stop at different highest feature ids)."""
    width = max(int(c[2:]) for t in tables.values() for c in t.columns if c.startswith("f_"))
    columns = [QID, LABEL] + [f"f_{j}" for j in range(1, width + 1)]
    return {name: t.reindex(columns=columns, fill_value=np.float32(0)) for name, t in tables.items()}


class LetorAdapter:
    """svmlight/LETOR train and test files with query groups (``qid:`` or ``.query`` files)."""

    name = "letor"
    description = "learning-to-rank feature files: *.train / *.test (svmlight, qid: or .query groups)"
    graph = LEARNING_TO_RANK
    stages = names(LEARNING_TO_RANK)
    # Ready feature files of a few hundred queries. LightGBM: its own defaults (step 0.1, all features,
    # 20 rows a leaf), the tree count chosen by 5-fold cross-validation over the training queries and
    # a bag of the refit and the fold models (rank.lightgbm.cv_folds): early stopping on a carve-out of
    # a few dozen queries kept anywhere from 33 to 490 trees by seed, and lost to LGBMRanker() on
    # NDCG@1/3 (benchmarks/bench_quality.py measures both, five seeds).
    config_defaults = ("rank.lightgbm.learning_rate=0.1", "rank.lightgbm.n_estimators=500", "rank.lightgbm.feature_fraction=1.0",
                       "rank.lightgbm.bagging_fraction=1.0",
                       "rank.lightgbm.min_data_in_leaf=20", "rank.lightgbm.cv_folds=5",
                       *(f"rank.xgboost.{key}" for key in ("learning_rate=0.05", "early_stopping_rounds=30", "n_estimators=300")),
                       "rank.sklearn.n_estimators=300",
                       "promote.metric=ndcg_at_10")  # no funnel and no final lists: the gate judges the ranker's order of the test lists

    def _files(self, config: DatasetConfig) -> dict[str, Path]:
        if not config.path:
            raise ConfigError("dataset 'letor' needs --path: a directory holding *.train and *.test svmlight files")
        root = Path(config.path)
        if not root.is_dir():
            raise ContractError(str(root), None, "a directory with *.train and *.test files", "no such directory")
        files = {"train": _find(root, "train", True), "test": _find(root, "test", True), "valid": _find(root, "vali", False)}
        return {k: v for k, v in files.items() if v is not None}

    def fingerprint(self, config: DatasetConfig, seed: int) -> str:
        """Paths, sizes and modification times of the files and their .query siblings."""
        paths = self._files(config).values()
        return files_fingerprint([q for p in paths for q in (p, p.with_name(p.name + ".query"))])

    def load(self, config: DatasetConfig, seed: int) -> Dataset:
        """Parse and check every file; tables ``ltr_train``, ``ltr_test`` (and ``ltr_valid``)."""
        tables = {f"ltr_{split}": read_svmlight(path) for split, path in self._files(config).items()}
        return Dataset(self.name, align_features(tables))
