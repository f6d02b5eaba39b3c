"""A vector index over faiss: built from a factory string, inner product or L2, saved as a faiss file.

``device="auto"`` moves the index to a GPU when faiss was built with CUDA and one is visible; the
code path is otherwise the same.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from rankpipe.pipeline.schema import check_fitted

INDEX_FILE = "index.faiss"
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """Nearest-neighbour search over row vectors; row ids are positions in the added matrix.

    ``nprobe`` (IVF: inverted lists scanned per query) and ``ef_search`` (HNSW: candidate list
    size) trade recall for speed at search time; each applies only to the factories that have it.
    """

    def __init__(self, factory: str = "Flat", metric: str = "ip", device: str = "auto", nprobe: int = 32, ef_search: int = 128):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}. Got {metric!r} instead.")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'. Got {device!r} instead.")
        if nprobe < 1 or ef_search < 1:
            raise ValueError(f"nprobe and ef_search must be ints in [1, inf). Got {nprobe} and {ef_search} instead.")
        self.factory, self.metric, self.device, self.nprobe, self.ef_search = factory, metric, device, nprobe, ef_search

    def _set_search_parameters(self) -> None:
        """Apply ``nprobe``/``ef_search`` to whichever of them the built (or loaded) index has."""
        if "Gpu" in type(self.index_).__name__:
            if "IVF" in type(self.index_).__name__:
                faiss.GpuParameterSpace().set_index_parameter(self.index_, "nprobe", self.nprobe)
            return
        if faiss.try_extract_index_ivf(self.index_) is not None:
            faiss.ParameterSpace().set_index_parameter(self.index_, "nprobe", self.nprobe)
        if "HNSW" in type(faiss.downcast_index(self.index_)).__name__:
            faiss.ParameterSpace().set_index_parameter(self.index_, "efSearch", self.ef_search)

    def fit(self, vectors: np.ndarray) -> "VectorIndex":
        """Build (train if the factory needs it) and fill the index with ``vectors`` (N, D)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"vectors must be a non-empty 2-D array. Got shape {vectors.shape} instead.")
        try:
            index = faiss.index_factory(vectors.shape[1], self.factory, METRICS[self.metric])
        except RuntimeError as exc:
            raise ValueError(f"index factory string {self.factory!r} is not valid for faiss: {exc}") from None
        if self.device == "cuda" and not gpu_available():
            raise ValueError("device 'cuda' was asked for, but faiss sees no GPU (install faiss-gpu and check CUDA)")
        if self.device != "cpu" and gpu_available() and "HNSW" not in self.factory:  # faiss has no GPU HNSW
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        self.index_ = index
        self._set_search_parameters()
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids) per query row; ids -1 where fewer than k exist."""
        check_fitted(self, "index_", "search")
        k = min(k, self.index_.ntotal)
        return self.index_.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, directory: str | Path) -> None:
        """Write ``index.faiss`` (a faiss index file; GPU indexes are copied to CPU first) into ``directory``."""
        index = faiss.index_gpu_to_cpu(self.index_) if "Gpu" in type(self.index_).__name__ else self.index_
        faiss.write_index(index, str(Path(directory) / INDEX_FILE))

    @classmethod
    def load(cls, directory: str | Path, metric: str = "ip", device: str = "auto", nprobe: int = 32, ef_search: int = 128) -> "VectorIndex":
        """Read the index that :meth:`save` wrote into ``directory``; search parameters are not stored in the file."""
        index = faiss.read_index(str(Path(directory) / INDEX_FILE))
        kind = type(faiss.downcast_index(index)).__name__  # e.g. IndexIVFFlat, IndexHNSWFlat: the file keeps no factory string
        out = cls(kind, metric, device, nprobe, ef_search)
        if device != "cpu" and gpu_available() and "HNSW" not in kind:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        out.index_ = index
        out._set_search_parameters()
        return out
