"""Recall channels and ANN indexes, rankers, rerankers and ranking metrics."""


def check_fitted(model: object, attribute: str, method: str) -> None:
    """Raise a clear error when ``method`` is called on an estimator whose learned ``attribute`` is missing."""
    if not hasattr(model, attribute):
        raise RuntimeError(f"{type(model).__name__} is not fitted yet; call fit(...) before {method}(...)")
