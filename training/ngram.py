"""Interpolated modified Kneser-Ney character n-gram models (Chen & Goodman 1998), numpy only: the baseline the
character language models (training/fortunes_lm.py) are measured against.

    lm = KneserNey(max_order=6, vocab_size=V, bos=0).fit(train_sequences)
    bits = lm.bits(test_sequences, order=5)      # total bits over every predicted token
    lm.discounts[(k, kind)]                      # (D1, D2, D3+) of order k, "raw" or "cont"

Each sequence is a list of token ids starting with BOS. It is padded on the left with BOS to max_order - 1 tokens of
context, and every token after the first BOS is predicted (EOS included, BOS never). An order-n model interpolates:

    P_n(w | h) = max(c(hw) - D(c(hw)), 0) / c(h.) + (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / c(h.) * P_{n-1}(w | h')

where h' drops h's first token, c is the raw count at the highest order and the continuation count N1+(. hw) (the
number of distinct tokens seen before hw) at every lower order, and the chain ends in the uniform distribution over
the V - 1 tokens that can be predicted. A context never seen (c(h.) = 0) passes the lower order through unchanged.
The three discounts of each order and count kind are Chen & Goodman's estimates from that order's count-of-counts
n1..n4: Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3.

Counting and scoring are vectorised: an n-gram is one int64 key (7 bits per token, so up to 9 tokens of a
vocabulary below 128), counted with np.unique and looked up with np.searchsorted.
"""
from __future__ import annotations

import numpy as np

BITS = 7  # bits per token in a key


def _keys(windows: np.ndarray) -> np.ndarray:
    """int64 key of each row of token ids (any number of columns, possibly 0)."""
    k = np.zeros(len(windows), dtype=np.int64)
    for j in range(windows.shape[1]):
        k = (k << BITS) | windows[:, j].astype(np.int64)
    return k


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[i] where sorted_keys[i] == query, else 0."""
    if len(sorted_keys) == 0:
        return np.zeros(len(query), dtype=values.dtype)
    i = np.searchsorted(sorted_keys, query)
    i = np.minimum(i, len(sorted_keys) - 1)
    hit = sorted_keys[i] == query
    return np.where(hit, values[i], 0)


class _Table:
    """Counts of one order and kind: n-gram keys -> count, and per context: total, N1, N2, N3+."""

    def __init__(self, gram_keys: np.ndarray, counts: np.ndarray):
        order = np.argsort(gram_keys, kind="stable")
        self.keys, self.counts = gram_keys[order], counts[order].astype(np.int64)
        ctx = self.keys >> BITS
        self.ctx_keys, first = np.unique(ctx, return_index=True)
        bounds = np.append(first, len(ctx))

        def per_ctx(v):
            return np.add.reduceat(v, bounds[:-1]) if len(v) else np.zeros(0, dtype=np.int64)

        self.total = per_ctx(self.counts)
        self.n1 = per_ctx((self.counts == 1).astype(np.int64))
        self.n2 = per_ctx((self.counts == 2).astype(np.int64))
        self.n3 = per_ctx((self.counts >= 3).astype(np.int64))
        cc = [int((self.counts == i).sum()) for i in (1, 2, 3, 4)]
        self.count_of_counts = cc
        n1, n2, n3, n4 = [max(c, 1) for c in cc]
        y = n1 / (n1 + 2 * n2)
        d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        # guard degenerate count-of-counts (tiny data): keep 0 < D1 <= D2 <= D3+ < 1, 2, 3
        d1 = min(max(d[0], 0.05), 0.95)
        d2 = min(max(d[1], d1), 1.95)
        d3 = min(max(d[2], d2), 2.95)
        self.discounts = (d1, d2, d3)


class KneserNey:
    def __init__(self, max_order: int, vocab_size: int, bos: int = 0):
        assert 1 <= max_order and max_order * BITS <= 63 and vocab_size <= (1 << BITS)
        self.max_order, self.V, self.bos = max_order, vocab_size, bos
        self.raw: dict[int, _Table] = {}
        self.cont: dict[int, _Table] = {}

    def _windows(self, seqs: list[list[int]] | list[np.ndarray], n: int) -> np.ndarray:
        """[P, n] array: for every predicted token (every token after a sequence's first, the BOS), the n tokens
        ending at it, with BOS padding on the left."""
        pad = self.max_order - 1
        rows = []
        for s in seqs:
            s = np.asarray(s, dtype=np.int64)
            assert s[0] == self.bos
            p = np.concatenate([np.full(pad - 1, self.bos, dtype=np.int64), s])  # pad + the sequence's own BOS
            idx = np.arange(pad, len(p))                                          # predicted positions
            rows.append(np.stack([p[idx - n + 1 + j] for j in range(n)], axis=1) if n else np.zeros((len(idx), 0), np.int64))
        return np.concatenate(rows)

    def fit(self, seqs) -> "KneserNey":
        for n in range(1, self.max_order + 1):
            keys, counts = np.unique(_keys(self._windows(seqs, n)), return_counts=True)
            self.raw[n] = _Table(keys, counts)
            if n >= 2:
                # continuation counts of order n-1: distinct left extensions of each (n-1)-gram
                lower = keys & ((1 << (BITS * (n - 1))) - 1)
                lk, lc = np.unique(lower, return_counts=True)
                self.cont[n - 1] = _Table(lk, lc)
        return self

    @property
    def discounts(self) -> dict:
        d = {(n, "raw"): t.discounts for n, t in self.raw.items()}
        d.update({(n, "cont"): t.discounts for n, t in self.cont.items()})
        return d

    def probs(self, seqs, order: int) -> np.ndarray:
        """P(token | context) of every predicted token of `seqs` under the order-`order` model."""
        assert 1 <= order <= self.max_order
        win = self._windows(seqs, order)
        p = np.full(len(win), 1.0 / (self.V - 1))
        for k in range(1, order + 1):
            t = self.raw[k] if k == order else self.cont[k]
            w = win[:, order - k:]                            # the k tokens ending at the predicted one
            gk = _keys(w)
            ck = gk >> BITS
            c = _lookup(t.keys, t.counts, gk).astype(np.float64)
            tot = _lookup(t.ctx_keys, t.total, ck).astype(np.float64)
            n1, n2, n3 = (_lookup(t.ctx_keys, a, ck) for a in (t.n1, t.n2, t.n3))
            d1, d2, d3 = t.discounts
            disc = np.where(c >= 3, d3, np.where(c == 2, d2, np.where(c == 1, d1, 0.0)))
            seen = tot > 0
            safe = np.where(seen, tot, 1.0)
            gamma = (d1 * n1 + d2 * n2 + d3 * n3) / safe
            p = np.where(seen, np.maximum(c - disc, 0.0) / safe + gamma * p, p)
        return p

    def bits(self, seqs, order: int) -> float:
        """Total bits (-log2 P) over every predicted token of `seqs`."""
        return float(-np.log2(self.probs(seqs, order)).sum())
