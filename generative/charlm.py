"""A small decoder-only transformer over characters, trained on the query log, and beam search that
continues a typed prefix: it completes prefixes no logged query starts with, in any script.

Characters are the vocabulary (queries are short, and a character model needs no tokenizer for
Chinese); characters seen fewer than ``min_count`` times share one unknown id, so the model learns
what to do with one. Decoding spells only words of the log (``constrain``): a character model
trained on a few thousand queries otherwise spends its beam on near-words ("blankat"), while the
log's vocabulary is exactly what a completion should be made of; the model's part is to choose,
in context, which words and how many. Decoding keeps each layer's keys and values (a KV cache) so each new character
costs one position, not the whole sequence. Checkpoints are a state_dict plus the config and the
vocabulary as plain values, loaded with ``weights_only=True``.

With ``max_context > 0`` the model is conditional: each query follows a context text (an item's
title and category, for generating the queries an item would be found by) and BOS, and only the
query's characters are trained on and generated: ``fit(queries, contexts=...)``,
``complete(prefix, context=...)``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from rankpipe.generative.normalize import is_cjk, normalize_queries, normalize_query

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL = 4


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@dataclass(frozen=True)
class CharLMConfig:
    """Model width, layers, heads, longest query in characters (longer ones are cut), dropout, and
    the longest conditioning context in characters (0: an unconditional query model)."""

    dim: int = 128
    layers: int = 3
    heads: int = 4
    max_len: int = 64
    dropout: float = 0.1
    max_context: int = 0


class _Block(nn.Module):
    """Pre-norm causal self-attention + MLP; ``forward(x, cache)`` appends this step's keys/values to ``cache``."""

    def __init__(self, config: CharLMConfig):
        super().__init__()
        self.heads = config.heads
        self.norm1, self.norm2 = nn.LayerNorm(config.dim), nn.LayerNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.mlp = nn.Sequential(nn.Linear(config.dim, 4 * config.dim), nn.GELU(approximate="tanh"), nn.Linear(4 * config.dim, config.dim))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        if cache is not None:
            if cache:  # earlier positions: the new queries attend to all of them
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        # Causal within the new positions; with a cache of P earlier ones, query t sees keys up to P + t.
        past = k.shape[2] - T
        mask = None
        if T > 1:
            mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past)
        attn = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0)
        x = x + self.dropout(self.proj(attn.transpose(1, 2).reshape(B, T, D)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class CharTransformer(nn.Module):
    """``forward(ids (B, T), caches=None, start=0)`` → next-character logits (B, T, V)."""

    def __init__(self, vocab_size: int, config: CharLMConfig = CharLMConfig()):
        super().__init__()
        self.config = config
        self.tokens = nn.Embedding(vocab_size, config.dim)
        self.positions = nn.Embedding(config.max_context + config.max_len + 2, config.dim)  # context + BOS + max_len characters + EOS
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, vocab_size, bias=False)
        self.head.weight = self.tokens.weight  # tied input/output embeddings
        # Small embeddings (GPT-2's 0.02): with the tied head, PyTorch's N(0, 1) default starts from
        # logits of size ~sqrt(dim) and a first-epoch loss near 30 nats per character.
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, ids: torch.Tensor, caches: list[list] | None = None, start: int = 0) -> torch.Tensor:
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.tokens(ids) + self.positions(positions)[None]
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches is not None else None)
        return self.head(self.norm(x))


class NumpyDecoder:
    """The trained :class:`CharTransformer`'s forward pass in NumPy, for decoding one request at a time.

    A suggestion is ~30 decoding steps of a batch of ``beam`` one-character rows; at that size a
    step is dominated by per-operation dispatch, which costs NumPy about a microsecond and torch
    about ten. Same arithmetic (float32, tanh GELU), checked against the torch model in the tests.
    """

    def __init__(self, model: CharTransformer):
        state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
        self.heads = model.config.heads
        self.tokens, self.positions = state["tokens.weight"], state["positions.weight"]
        self.blocks = [{name: state[f"blocks.{i}.{name}"] for name in (
            "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias",
            "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias")} for i in range(len(model.blocks))]
        for block in self.blocks:  # pre-transposed once: x @ W.T becomes x @ W_t
            for name in ("qkv", "proj", "mlp.0", "mlp.2"):
                block[f"{name}.t"] = np.ascontiguousarray(block[f"{name}.weight"].T)
            # Each layer norm feeds one linear layer, so its scale and shift fold into that layer's
            # weights: (z * w + b) @ W_t + c == z @ (w[:, None] * W_t) + (b @ W_t + c). Two fewer operations per norm.
            for norm, linear in (("norm1", "qkv"), ("norm2", "mlp.0")):
                block[f"{linear}.t"], block[f"{linear}.bias"] = self._fold(block[f"{norm}.weight"], block[f"{norm}.bias"],
                                                                           block[f"{linear}.t"], block[f"{linear}.bias"])
            # Likewise constants: attention's 1/sqrt(head size) into the query columns, GELU's 1/2 into the next layer.
            dim = model.config.dim
            block["qkv.t"][:, :dim] *= np.float32(1.0 / math.sqrt(dim // self.heads))
            block["qkv.bias"][:dim] *= np.float32(1.0 / math.sqrt(dim // self.heads))
            block["mlp.2.t"] *= np.float32(0.5)
        self.head_t, self.head_bias = self._fold(state["norm.weight"], state["norm.bias"], np.ascontiguousarray(state["tokens.weight"].T),
                                                 np.zeros(len(state["tokens.weight"]), dtype=np.float32))

    @staticmethod
    def _fold(scale: np.ndarray, shift: np.ndarray, weight_t: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(scale[:, None] * weight_t), (shift @ weight_t + bias).astype(np.float32)

    @staticmethod
    def _standardize(x: np.ndarray) -> np.ndarray:
        """A layer norm without its scale and shift (folded into the next layer), over rows of 2-D ``x``."""
        inv_d = 1.0 / x.shape[-1]
        centred = x - np.add.reduce(x, axis=-1, keepdims=True) * inv_d
        return centred / np.sqrt(np.einsum("ij,ij->i", centred, centred)[:, None] * inv_d + 1e-5)

    @staticmethod
    def _twice_gelu(x: np.ndarray) -> np.ndarray:
        """2 * GELU(x), tanh form (the 1/2 is folded into the next layer's weights)."""
        return x + x * np.tanh(x * (0.7978845608028654 + 0.035677408136300125 * (x * x)))

    def __call__(self, ids: np.ndarray, caches: list[list], start: int) -> np.ndarray:
        """Logits (B, T, V) of ``ids`` (B, T) at positions ``start``…; ``caches`` as in :class:`CharTransformer`."""
        B, T = ids.shape
        # Rows are kept 2-D, (B*T, D), between attentions: NumPy sends a 2-D matmul to one BLAS call
        # and a stacked 3-D one through a slower loop (about 2x at beam size).
        x = (self.tokens[ids] + self.positions[start:start + T][None]).reshape(B * T, -1)
        D = x.shape[-1]
        Dh = D // self.heads
        for block, cache in zip(self.blocks, caches):
            h = self._standardize(x)
            q, k, v = (h @ block["qkv.t"] + block["qkv.bias"]).reshape(B, T, 3, self.heads, Dh).transpose(2, 0, 3, 1, 4)
            if cache:
                k, v = np.concatenate([cache[0], k], axis=2), np.concatenate([cache[1], v], axis=2)
            cache[:] = [k, v]
            scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, P + T), scaled: q's weights carry 1/sqrt(Dh)
            if T > 1:
                past = k.shape[2] - T
                scores = np.where(np.tri(T, k.shape[2], past, dtype=bool), scores, -np.inf)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ v  # (B, H, T, Dh)
            x = x + attn.transpose(0, 2, 1, 3).reshape(B * T, D) @ block["proj.t"] + block["proj.bias"]
            h = self._standardize(x)
            x = x + self._twice_gelu(h @ block["mlp.0.t"] + block["mlp.0.bias"]) @ block["mlp.2.t"] + block["mlp.2.bias"]
        return (self._standardize(x) @ self.head_t + self.head_bias).reshape(B, T, -1)


class CharLM:
    """Train on a query log (``fit``), then ``complete(prefix, k)``: the k most probable queries that continue ``prefix``.

    Scores are the model's probability of the completed query given the typed prefix.
    """

    def __init__(self, config: CharLMConfig = CharLMConfig(), epochs: int = 8, batch_size: int = 256, learning_rate: float = 3e-3,
                 min_count: int = 2, beam: int = 10, constrain: bool = True, seed: int = 42, progress: bool = True):
        self.config, self.epochs, self.batch_size, self.learning_rate = config, epochs, batch_size, learning_rate
        self.min_count, self.beam, self.constrain, self.seed, self.progress = min_count, beam, constrain, seed, progress

    # ------------------------------------------------------------------ vocabulary
    def _set_words(self, words: list[str]) -> None:
        """The log's words (not CJK), as a map from each word prefix to the token ids that extend it,
        and the set of whole words: the decoder spells only words the log has (see :meth:`complete`)."""
        self.words_ = sorted(w for w in words if w and not any(is_cjk(ch) for ch in w) and all(ch in self.index_ for ch in w))
        extend: dict[str, set[int]] = {}
        for word in self.words_:  # once per fit or load, over the vocabulary
            for i in range(len(word)):
                extend.setdefault(word[:i], set()).add(self.index_[word[i]])
        self.extend_ = {prefix: np.fromiter(ids, dtype=np.int64) for prefix, ids in extend.items()}
        self.whole_ = set(self.words_)
        self.space_ = self.index_.get(" ")
        self.masks_: dict[str | None, np.ndarray] = {}  # partial word -> allowed next tokens as a boolean row, filled as decoding meets them

    def _next_mask(self, text: str) -> np.ndarray:
        """Which tokens may follow ``text``, as a boolean row over the vocabulary: :meth:`_allowed`
        (everything when unconstrained) less PAD, BOS and UNK, memoized per partial word (the beam
        meets the same ones again and again; bounded, as typed partial words are unbounded)."""
        partial = text[text.rfind(" ") + 1:] if self.constrain else None
        mask = self.masks_.get(partial)
        if mask is None:
            if len(self.masks_) >= 8192:
                self.masks_.clear()
            allowed = self._allowed(partial) if partial is not None else None
            mask = np.ones(len(self.chars_) + SPECIAL, dtype=bool)
            if allowed is not None:
                mask[:] = False
                mask[allowed] = True
            mask[[PAD, BOS, UNK]] = False  # never generated
            self.masks_[partial] = mask
        return mask

    def _allowed(self, text: str) -> np.ndarray | None:
        """Token ids that may follow ``text`` under the vocabulary constraint; None: anything may.

        Inside a word the next character must keep it a prefix of a logged word, and the word may
        end (space or end of query) only where it is a whole logged word. A partial word the log
        does not know (a typo, a new word: no logged word starts with it) may only end as it was
        typed: any letter added to it would spell a word nobody ever searched ("xyzzy" → "xyzzye").
        Words in CJK script (no spaces between words) are left free.
        """
        partial = text[text.rfind(" ") + 1:]
        if any(is_cjk(ch) for ch in partial):
            return None
        if partial and partial not in self.extend_ and partial not in self.whole_:
            return np.asarray([EOS] + ([self.space_] if self.space_ is not None else []), dtype=np.int64)
        ids = self.extend_.get(partial, np.zeros(0, dtype=np.int64))
        if partial in self.whole_:
            ids = np.concatenate([ids, [EOS] + ([self.space_] if self.space_ is not None else [])])
        return ids

    def _encode(self, text: str, limit: int | None = None) -> list[int]:
        return [self.index_.get(c, UNK) for c in text[: self.config.max_len if limit is None else limit]]

    def _context_ids(self, context: str | None) -> list[int]:
        """The conditioning characters that precede BOS: none for an unconditional model."""
        if self.config.max_context == 0 or context is None:
            return []
        return self._encode(normalize_query(context), self.config.max_context)

    def _batch(self, texts: list[str], contexts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, targets): ``[context…, BOS, query…, EOS]`` rows padded with PAD, and the next-character
        targets of ``ids[:, :-1]`` with the context's positions set to PAD (not trained on)."""
        heads = [self._context_ids(c) for c in contexts] if contexts is not None else [[] for _ in texts]
        rows = [[*head, BOS, *self._encode(t), EOS] for head, t in zip(heads, texts)]
        out = np.full((len(rows), max(map(len, rows))), PAD, dtype=np.int64)
        targets = np.full((len(rows), out.shape[1] - 1), PAD, dtype=np.int64)
        for i, (head, row) in enumerate(zip(heads, rows)):  # per query, at batch-building time only
            out[i, : len(row)] = row
            targets[i, len(head): len(row) - 1] = row[len(head) + 1:]
        return torch.as_tensor(out), torch.as_tensor(targets)

    # ------------------------------------------------------------------ training
    def fit(self, queries: pd.Series, weights: np.ndarray | None = None, contexts: pd.Series | None = None) -> "CharLM":
        """Train on ``queries`` (raw text; each row one typed query, so repeats weigh in). ``weights``
        (optional, per row) make rows that often drawn in each epoch's sample (e.g. time decay).
        ``contexts`` (one text per row; needs ``config.max_context > 0``): what each query is conditioned on."""
        texts = normalize_queries(pd.Series(queries).reset_index(drop=True))
        if (contexts is not None) != (self.config.max_context > 0):
            raise ValueError(f"CharLM.fit: contexts must be given exactly when config.max_context > 0; got max_context="
                             f"{self.config.max_context} and contexts {'given' if contexts is not None else 'None'}")
        if contexts is not None and len(contexts) != len(texts):
            raise ValueError(f"CharLM.fit: contexts must have one row per query ({len(texts)}); got {len(contexts)}")
        keep = (texts != "").to_numpy()
        texts = texts[keep].reset_index(drop=True)
        if contexts is not None:
            contexts = normalize_queries(pd.Series(contexts).reset_index(drop=True))[keep].reset_index(drop=True)
        if len(texts) == 0:
            raise ValueError("CharLM.fit: the query log holds no non-empty query")
        # The context's characters join the vocabulary: the model must read them, though it writes only query words.
        counts = pd.Series(list("".join(texts) + ("".join(contexts.str[: self.config.max_context]) if contexts is not None else ""))).value_counts()
        self.chars_ = sorted(counts.index[counts >= self.min_count])
        self.index_ = {c: i + SPECIAL for i, c in enumerate(self.chars_)}
        self._set_words(texts.str.split(" ").explode().dropna().unique().tolist())
        torch.manual_seed(self.seed)
        self.model_ = CharTransformer(len(self.chars_) + SPECIAL, self.config)
        rng = np.random.default_rng(self.seed)
        p = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)[keep]
            p = w / w.sum()
        optimizer = torch.optim.AdamW(self.model_.parameters(), lr=self.learning_rate, weight_decay=0.01)
        steps = self.epochs * math.ceil(len(texts) / self.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.learning_rate, total_steps=steps, pct_start=0.1)
        self.model_.train()
        bar = tqdm(total=steps, desc="suggest: char transformer", unit="batch", disable=None if self.progress else True)
        self.losses_ = []
        for _ in range(self.epochs):
            order = rng.choice(len(texts), size=len(texts), p=p) if p is not None else rng.permutation(len(texts))
            total, n = 0.0, 0
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                ids, targets = self._batch(texts.iloc[rows].tolist(), contexts.iloc[rows].tolist() if contexts is not None else None)
                logits = self.model_(ids[:, :-1])
                loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model_.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                total, n = total + float(loss.detach()), n + 1
                bar.update(1)
            self.losses_.append(total / max(n, 1))
        bar.close()
        self.model_.eval()
        self.decoder_ = None  # rebuilt from the new weights on first use
        return self

    def log_likelihood(self, queries: list[str], contexts: list[str] | None = None) -> np.ndarray:
        """Natural-log probability of each whole (normalized) query, end included (given its context
        for a conditional model): for perplexity checks."""
        ids, targets = self._batch([normalize_query(q) for q in queries], contexts)
        with torch.inference_mode():
            logp = torch.log_softmax(self.model_(ids[:, :-1]), dim=-1).gather(2, targets[:, :, None]).squeeze(-1)
        return (logp * (targets != PAD)).sum(dim=1).numpy().astype(np.float64)

    # ------------------------------------------------------------------ decoding
    def _decoder(self) -> NumpyDecoder:
        if getattr(self, "decoder_", None) is None:
            self.decoder_ = NumpyDecoder(self.model_)
        return self.decoder_

    def complete(self, prefix: str, k: int = 10, max_new: int | None = 24, context: str | None = None) -> list[tuple[str, float]]:
        """Beam search from ``prefix``: up to ``k`` distinct finished queries, most probable first, as (query, P(query | prefix)).

        Deterministic: no sampling, so the same model and prefix always give the same list. At most
        ``max_new`` characters are added (None: up to ``config.max_len``): a query that needs more
        from a short prefix is too improbable to reach the top k, and the bound keeps latency flat.
        The steps, not their width, set the tail: on the real query lists 24 instead of 32 left MRR@10
        unchanged (0.0880 on 3,259 pairs; 91% of lists identical) and cut p99 latency by a tenth.
        ``context`` conditions a conditional model (``config.max_context > 0``; ignored otherwise).
        """
        typed, max_new = self._typed(prefix, max_new)
        return self._search([typed], [self._context_ids(context)], k, max_new)[0]

    def complete_many(self, prefixes: list[str], k: int = 10, max_new: int | None = 24,
                      contexts: list[str | None] | None = None, chunk: int = 64) -> list[list[tuple[str, float]]]:
        """:meth:`complete` of each prefix (given its context), the same lists, decoded together.

        Prefixes whose prompts have the same length step in lockstep, ``chunk`` at a time, so each
        decoding step is one pass of the model over every live hypothesis of the chunk.
        """
        contexts = [None] * len(prefixes) if contexts is None else list(contexts)
        if len(contexts) != len(prefixes):
            raise ValueError(f"CharLM.complete_many: one context per prefix ({len(prefixes)}); got {len(contexts)}")
        prepared = [(*self._typed(prefix, max_new), self._context_ids(context)) for prefix, context in zip(prefixes, contexts)]
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (typed, steps, head) in enumerate(prepared):
            groups.setdefault((len(head), len(typed), steps), []).append(i)
        out: list[list[tuple[str, float]]] = [[] for _ in prefixes]
        for (_, _, steps), members in groups.items():
            for at in range(0, len(members), chunk):
                part = members[at:at + chunk]
                for i, found in zip(part, self._search([prepared[i][0] for i in part], [prepared[i][2] for i in part], k, steps)):
                    out[i] = found
        return out

    def _typed(self, prefix: str, max_new: int | None) -> tuple[str, int]:
        """(the prefix as the model reads it, how many characters may be added to it)."""
        typed = normalize_query(prefix)
        if prefix.endswith(" ") and typed:
            typed += " "  # the user finished a word: continue after the space
        typed = typed[: self.config.max_len]
        room = self.config.max_len - len(typed)
        return typed, room if max_new is None else min(max_new, room)

    def _search(self, typed: list[str], heads: list[list[int]], k: int, max_new: int) -> list[list[tuple[str, float]]]:
        """The beam search of :meth:`complete` for prompts of one length (same context and prefix
        lengths), side by side: each prompt keeps its own beams, finished queries and stopping rule."""
        decoder = self._decoder()
        ids = np.asarray([[*head, BOS, *self._encode(text)] for head, text in zip(heads, typed)])
        caches: list[list] = [[] for _ in decoder.blocks]
        logp = _log_softmax(decoder(ids, caches, 0)[:, -1])  # (rows, V): one row per live hypothesis
        live, counts = list(range(len(typed))), [1] * len(typed)  # the prompts still searching and their rows, in row order
        beam_text, beam_score = [""] * len(typed), np.zeros(len(typed))
        finished: list[list[tuple[str, float]]] = [[] for _ in typed]
        best_k: list[list[float]] = [[] for _ in typed]  # min-heaps of the k best finished scores: the root is the bar a live beam must beat
        position, vocab = ids.shape[1], logp.shape[1]
        for _ in range(max(max_new, 0) + 1):
            owner = [o for o, n in zip(live, counts) for _ in range(n)]  # the prompt of each row
            allowed = np.stack([self._next_mask(typed[o] + text) for o, text in zip(owner, beam_text)])
            total = np.where(allowed, beam_score[:, None] + logp, -np.inf)  # (rows, V)
            # Every live hypothesis that may end here is a candidate query, whether or not ending
            # ranks among the best expansions: otherwise long, locally likely continuations ("of
            # the of the") crowd the beam and the plain word completions are never scored.
            for row in np.flatnonzero(allowed[:, EOS]).tolist():
                o, score = owner[row], float(total[row, EOS])
                finished[o].append((typed[o] + beam_text[row], score))
                (heapq.heappush if len(best_k[o]) < k else heapq.heappushpop)(best_k[o], score)
            total[:, EOS] = -np.inf
            # Each prompt's expansions as one row of (its hypotheses × V), padded with -inf to the widest.
            first_row = list(itertools.accumulate(counts[:-1], initial=0))
            if min(counts) == max(counts):  # one prompt (a service's request), or every beam full: nothing to pad
                flat = total.reshape(len(live), -1)
            else:
                flat = np.full((len(live), max(counts) * vocab), -np.inf)
                local = np.arange(len(owner)) - np.repeat(first_row, counts)
                flat.reshape(len(live), -1, vocab)[np.repeat(np.arange(len(live)), counts), local] = total
            width = min(self.beam * 2, flat.shape[1])
            top = np.argpartition(-flat, width - 1, axis=1)[:, :width]
            by_prompt = np.arange(len(live))[:, None]
            top = top[by_prompt, np.argsort(-flat[by_prompt, top], axis=1, kind="stable")]
            next_live, next_counts, next_text, next_score, parents, tokens = [], [], [], [], [], []
            for j, o in enumerate(live):
                mine: list[float] = []
                for index in top[j].tolist():
                    parent, token = divmod(index, vocab)
                    score = float(flat[j, index])
                    if score == -np.inf:
                        break
                    if len(mine) < self.beam:
                        mine.append(score)
                        next_text.append(beam_text[first_row[j] + parent] + self.chars_[token - SPECIAL])
                        parents.append(first_row[j] + parent)
                        tokens.append(token)
                # Scores only fall as a query grows, so once k finished beat every live beam, this prompt stops.
                if mine and (position - len(heads[o]) > self.config.max_len or (len(best_k[o]) >= k and best_k[o][0] >= max(mine))):
                    del next_text[-len(mine):], parents[-len(mine):], tokens[-len(mine):]
                elif mine:
                    next_live.append(o)
                    next_counts.append(len(mine))
                    next_score.extend(mine)
            if not next_live:
                break
            for cache in caches:
                cache[:] = [cache[0][parents], cache[1][parents]]
            logp = _log_softmax(decoder(np.asarray(tokens)[:, None], caches, position)[:, -1])
            live, counts, beam_text, beam_score = next_live, next_counts, next_text, np.asarray(next_score)
            position += 1
        return [self._ranked(found, k) for found in finished]

    @staticmethod
    def _ranked(finished: list[tuple[str, float]], k: int) -> list[tuple[str, float]]:
        """The k most probable distinct finished queries, as (query, probability)."""
        out, seen = [], set()
        for text, score in sorted(finished, key=lambda f: -f[1]):
            text = text.strip()
            if text and text not in seen:
                seen.add(text)
                out.append((text, float(np.exp(score))))
        return out[:k]

    def suggest(self, prefix: str, k: int = 10) -> list[tuple[str, float]]:
        """:meth:`complete`, under the suggester protocol (``generative.blend.Suggester``)."""
        return self.complete(prefix, k)

    def suggest_many(self, prefixes: list[str], k: int = 10) -> list[list[tuple[str, float]]]:
        """:meth:`suggest` of each prefix, decoded together (:meth:`complete_many`): for offline evaluation."""
        return self.complete_many(prefixes, k)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """state_dict + config + vocabulary in one file (plain values, loadable with ``weights_only=True``)."""
        torch.save({"state_dict": self.model_.state_dict(), "config": asdict(self.config), "chars": self.chars_, "words": self.words_,
                    "params": {"beam": self.beam, "min_count": self.min_count, "constrain": self.constrain}}, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "CharLM":
        """The model :meth:`save` wrote; ``weights_only=True``: tensors and plain values, never code."""
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
        lm = cls(CharLMConfig(**checkpoint["config"]), **checkpoint["params"], progress=False)
        lm.chars_ = list(checkpoint["chars"])
        lm.index_ = {c: i + SPECIAL for i, c in enumerate(lm.chars_)}
        lm._set_words(list(checkpoint["words"]))
        lm.model_ = CharTransformer(len(lm.chars_) + SPECIAL, lm.config)
        lm.model_.load_state_dict(checkpoint["state_dict"])
        lm.model_.eval()
        return lm
