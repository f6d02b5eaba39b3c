"""A conditional VAE over mixed tabular rows (Kingma & Welling 2014; conditioned on the label as in
CVAE, Sohn et al. 2015), for synthesizing ranking training rows of a given grade.

Columns with few distinct values (≤ ``max_categories``) are categorical: one-hot in, softmax out.
The others are numeric: mapped to a standard normal by their train quantiles (heavy-tailed counts
become well-behaved), a Gaussian output with a learned per-column scale, and mapped back by the
inverse quantile map, so synthetic values stay inside the ranges train had. A missing value is one
more category of its column's indicator. The label (grade) enters the encoder and the decoder;
``sample(grades)`` draws rows of the requested grades.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class TabularVAEConfig:
    """Latent size, hidden width, epochs, batch, Adam step, KL weight, categorical threshold, quantiles kept."""

    latent: int = 16
    hidden: int = 256
    epochs: int = 200
    batch_size: int = 256
    learning_rate: float = 1e-3
    beta: float = 1.0
    max_categories: int = 10
    quantiles: int = 1000


class _Net(nn.Module):
    def __init__(self, n_in: int, n_labels: int, n_numeric: int, category_sizes: list[int], config: TabularVAEConfig):
        super().__init__()
        self.category_sizes = category_sizes
        self.encoder = nn.Sequential(nn.Linear(n_in + n_labels, config.hidden), nn.SiLU(), nn.Linear(config.hidden, config.hidden), nn.SiLU(),
                                     nn.Linear(config.hidden, 2 * config.latent))
        self.decoder = nn.Sequential(nn.Linear(config.latent + n_labels, config.hidden), nn.SiLU(), nn.Linear(config.hidden, config.hidden),
                                     nn.SiLU(), nn.Linear(config.hidden, n_numeric + sum(category_sizes)))
        self.log_scale = nn.Parameter(torch.zeros(n_numeric))
        self.n_numeric = n_numeric

    def decode(self, z: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = self.decoder(torch.cat([z, label], dim=1))
        return out[:, : self.n_numeric], list(out[:, self.n_numeric:].split(self.category_sizes, dim=1))


class TabularVAE:
    """``fit(X, grades)`` then ``sample(grades, seed)`` → a frame with X's columns (see the module docstring)."""

    def __init__(self, config: TabularVAEConfig = TabularVAEConfig(), seed: int = 42, progress: bool = True):
        self.config, self.seed, self.progress = config, seed, progress

    # ---------------------------------------------------------------- encoding of the columns
    def _fit_columns(self, X: pd.DataFrame) -> None:
        self.columns_ = list(X.columns)
        distinct = X.nunique(dropna=True)
        self.categorical_ = [c for c in self.columns_ if distinct[c] <= self.config.max_categories]
        self.numeric_ = [c for c in self.columns_ if c not in self.categorical_]
        self.levels_ = {c: np.sort(X[c].dropna().unique()) for c in self.categorical_}
        self.categorical_missing_ = [c for c in self.categorical_ if X[c].isna().any()]  # these get one more level: missing
        self.has_missing_ = [c for c in self.numeric_ if X[c].isna().any()]
        qs = np.linspace(0, 1, self.config.quantiles)
        self.quantiles_ = {c: np.nanquantile(X[c].to_numpy(np.float64), qs) if X[c].notna().any() else np.zeros_like(qs) for c in self.numeric_}

    def _encode(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(numeric (N, n) standard-normal scores, categorical codes (N, c) with the last code = missing)."""
        from scipy.stats import norm

        numeric = np.zeros((len(X), len(self.numeric_)), dtype=np.float32)
        qs = np.linspace(0, 1, self.config.quantiles)
        for j, c in enumerate(self.numeric_):
            x = X[c].to_numpy(np.float64)
            u = np.interp(np.nan_to_num(x, nan=self.quantiles_[c][len(qs) // 2]), self.quantiles_[c], qs)
            numeric[:, j] = norm.ppf(np.clip(u, 1e-3, 1 - 1e-3))
        codes = np.zeros((len(X), len(self._category_columns())), dtype=np.int64)
        for j, (c, levels) in enumerate(self._category_columns()):
            if levels is None:  # a numeric column's missing indicator
                codes[:, j] = X[c].isna().to_numpy().astype(np.int64)
            else:
                x = X[c].to_numpy()
                idx = np.searchsorted(levels, x)
                known = pd.notna(x) & (idx < len(levels))
                codes[:, j] = np.where(known, np.clip(idx, 0, len(levels) - 1), len(levels))
        return numeric, codes

    def _category_columns(self) -> list[tuple[str, np.ndarray | None]]:
        return [(c, self.levels_[c]) for c in self.categorical_] + [(c, None) for c in self.has_missing_]

    def _category_sizes(self) -> list[int]:
        return [len(levels) + (c in self.categorical_missing_) if levels is not None else 2 for c, levels in self._category_columns()]

    def _one_hot(self, codes: np.ndarray) -> np.ndarray:
        parts = [np.eye(size, dtype=np.float32)[codes[:, j]] for j, size in enumerate(self._category_sizes())]
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(codes), 0), dtype=np.float32)

    # ---------------------------------------------------------------- training and sampling
    def fit(self, X: pd.DataFrame, grades: np.ndarray) -> "TabularVAE":
        """Train on rows ``X`` with their ``grades`` (the condition)."""
        if len(X) == 0:
            raise ValueError("TabularVAE.fit: no rows")
        self._fit_columns(X)
        self.labels_ = np.sort(np.unique(grades))
        numeric, codes = self._encode(X)
        cond = np.eye(len(self.labels_), dtype=np.float32)[np.searchsorted(self.labels_, grades)]
        inputs = torch.as_tensor(np.concatenate([numeric, self._one_hot(codes)], axis=1))
        numeric_t, codes_t, cond_t = torch.as_tensor(numeric), torch.as_tensor(codes), torch.as_tensor(cond)
        torch.manual_seed(self.seed)
        self.net_ = _Net(inputs.shape[1], len(self.labels_), len(self.numeric_), self._category_sizes(), self.config)
        optimizer = torch.optim.Adam(self.net_.parameters(), lr=self.config.learning_rate)
        rng = np.random.default_rng(self.seed)
        self.losses_ = []
        for _ in tqdm(range(self.config.epochs), desc="tabular VAE", unit="epoch", disable=None if self.progress else True):
            order = rng.permutation(len(X))
            total = 0.0
            for start in range(0, len(order), self.config.batch_size):
                idx = torch.as_tensor(order[start:start + self.config.batch_size])
                mu, log_var = self.net_.encoder(torch.cat([inputs[idx], cond_t[idx]], dim=1)).chunk(2, dim=1)
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
                mean, logits = self.net_.decode(z, cond_t[idx])
                scale = torch.exp(self.net_.log_scale)
                # Gaussian negative log-likelihood per numeric column, cross-entropy per categorical one.
                nll = (0.5 * ((numeric_t[idx] - mean) / scale) ** 2 + self.net_.log_scale).sum(dim=1)
                for j, column_logits in enumerate(logits):
                    nll = nll + nn.functional.cross_entropy(column_logits, codes_t[idx, j], reduction="none")
                kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(dim=1)
                loss = (nll + self.config.beta * kl).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            self.losses_.append(total / len(X))
        self.net_.eval()
        return self

    @torch.no_grad()
    def sample(self, grades: np.ndarray, seed: int = 0) -> pd.DataFrame:
        """Synthetic rows, one per entry of ``grades`` (each a grade seen in fit), with X's columns."""
        from scipy.stats import norm

        grades = np.asarray(grades)
        unknown = sorted(set(grades.tolist()) - set(self.labels_.tolist()))
        if unknown:
            raise ValueError(f"TabularVAE.sample: grades {unknown} were not in the training labels {self.labels_.tolist()}")
        generator = torch.Generator().manual_seed(seed)
        cond = torch.as_tensor(np.eye(len(self.labels_), dtype=np.float32)[np.searchsorted(self.labels_, grades)])
        z = torch.randn(len(grades), self.config.latent, generator=generator)
        mean, logits = self.net_.decode(z, cond)
        numeric = (mean + torch.exp(self.net_.log_scale) * torch.randn(mean.shape, generator=generator)).numpy()
        out = pd.DataFrame(index=range(len(grades)), columns=self.columns_, dtype=np.float64)
        qs = np.linspace(0, 1, self.config.quantiles)
        for j, c in enumerate(self.numeric_):
            out[c] = np.interp(norm.cdf(numeric[:, j]), qs, self.quantiles_[c])
        for (c, levels), column_logits in zip(self._category_columns(), logits):
            drawn = torch.multinomial(torch.softmax(column_logits, dim=1), 1, generator=generator).squeeze(1).numpy()
            if levels is None:
                out.loc[drawn == 1, c] = np.nan
            else:
                out[c] = np.where(drawn < len(levels), levels[np.clip(drawn, 0, len(levels) - 1)].astype(np.float64), np.nan)
        return out
