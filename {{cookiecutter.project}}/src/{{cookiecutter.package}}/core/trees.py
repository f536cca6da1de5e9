"""The fitted boosted trees, scored all at once with numpy: the service's hot path.

``HistGradientBoostingClassifier.decision_function`` has a fixed cost per call whatever the rows:
it re-validates the input through its internal ColumnTransformer (pandas and narwhals checks),
then walks its 250 trees one Python call each. The service scores batches of a few records,
twice per batch when it gives reasons, so that fixed cost was most of its CPU. This walks every
tree for every row together, one depth level per step (trees are shallow), from the fitted
model's own nodes, thresholds, category bitsets and baseline, then adds the trees' values in
the classifier's order: the same comparisons and the same additions, so the same number to the
bit.

It reads the classifier's fitted internals (``_predictors``, ``_bin_mapper``, ``_preprocessor``,
``_baseline_prediction``: scikit-learn has no public route to a fitted tree), which may change
between versions (the lock pins one; ``PROVED_ON`` names those it was proved on). So
:func:`compile_trees` checks itself against ``decision_function`` on probe rows before it is used,
on every version, and answers ``None`` when it does not agree to the bit; callers then use
scikit-learn. The generated tests also compare both on held-out rows.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

import numpy as np
from scipy.special import expit

log = logging.getLogger(__name__)

# scikit-learn versions whose fitted internals this walk was proved on (to the bit, on probe
# rows); on others compile_trees warns and its probe decides.
PROVED_ON = ("1.9.1",)


def internal_order(classifier: Any) -> np.ndarray:
    """For each column the fitted trees split on, the classifier's input column it comes from.

    When categorical features are declared, the classifier's own input step puts them first, then
    the numeric ones (scikit-learn's private behaviour: the walk's probe checks it to the bit).
    """
    n = int(classifier.n_features_in_)
    if getattr(classifier, "_preprocessor", None) is None:
        return np.arange(n)
    categorical = np.asarray(classifier.is_categorical_, dtype=bool)
    return np.concatenate([np.flatnonzero(categorical), np.flatnonzero(~categorical)])


class CompiledTrees:
    """``decision_function`` and the positive-class ``predict_proba`` of a fitted binary HGB classifier."""

    def __init__(self, classifier: Any) -> None:
        if getattr(classifier, "n_trees_per_iteration_", None) != 1:
            raise TypeError("only a binary HistGradientBoostingClassifier can be compiled")
        self.is_categorical = (
            np.asarray(classifier.is_categorical_, dtype=bool) if classifier.is_categorical_ is not None else None
        )
        self.n_features = int(classifier.n_features_in_)
        self._encode_plan(classifier)
        self.baseline = float(np.asarray(classifier._baseline_prediction).reshape(-1)[0])
        known, f_idx_map = classifier._bin_mapper.make_known_categories_bitsets()
        self.known_bitsets = np.asarray(known, dtype=np.uint32)
        self.f_idx_map = np.asarray(f_idx_map, dtype=np.int64)
        nodes, bitsets, roots, offset, bit_offset = [], [], [], 0, 0
        for (predictor,) in classifier._predictors:
            n = predictor.nodes
            roots.append(offset)
            nodes.append((n, offset, bit_offset))
            bitsets.append(np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8))
            offset += len(n)
            bit_offset += len(bitsets[-1])
        self.roots = np.asarray(roots, dtype=np.int64)
        all_nodes = np.concatenate([n for n, _, _ in nodes])
        shift = np.concatenate([np.full(len(n), o, dtype=np.int64) for n, o, _ in nodes])
        bit_shift = np.concatenate([np.full(len(n), b, dtype=np.int64) for n, _, b in nodes])
        self.value = all_nodes["value"].astype(np.float64)
        self.feature = all_nodes["feature_idx"].astype(np.int64)
        self.threshold = all_nodes["num_threshold"].astype(np.float64)
        self.missing_left = all_nodes["missing_go_to_left"].astype(bool)
        self.left = all_nodes["left"].astype(np.int64) + shift
        self.right = all_nodes["right"].astype(np.int64) + shift
        self.is_leaf = all_nodes["is_leaf"].astype(bool)
        self.node_categorical = all_nodes["is_categorical"].astype(bool)
        self.bitset = all_nodes["bitset_idx"].astype(np.int64) + bit_shift
        self.left_bitsets = np.concatenate(bitsets) if bitsets else np.zeros((0, 8), dtype=np.uint32)
        self.depth = int(all_nodes["depth"].max()) + 1

    def _encode_plan(self, classifier: Any) -> None:
        # The classifier's own input step (fitted when categorical features are declared): its
        # categories in the order of its columns, categorical columns first, then numeric ones.
        self.order = internal_order(classifier)
        pre = getattr(classifier, "_preprocessor", None)
        if pre is None:
            self.codes = []
            return
        encoder = pre.named_transformers_["encoder"]
        # Its categories without the missing-value one, which it leaves last (OrdinalEncoder sorts them).
        self.codes = [c[~np.isnan(c)] for c in (np.asarray(c, dtype=np.float64) for c in encoder.categories_)]

    def _internal(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the trees see it: the classifier's column order, categories as its codes (NaN if unknown)."""
        out = np.ascontiguousarray(x[:, self.order], dtype=np.float64)
        for k, known in enumerate(self.codes):
            column = out[:, k]
            pos = np.searchsorted(known, column)
            hit = (pos < len(known)) & (known[np.minimum(pos, len(known) - 1)] == column)
            out[:, k] = np.where(hit, pos, np.nan)
        return out

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of the positive class for the classifier's input ``x`` (n x features)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got shape {x.shape}")
        data = self._internal(x)
        n, t = len(data), len(self.roots)
        node = np.broadcast_to(self.roots, (n, t)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            leaf = self.is_leaf[node]
            if leaf.all():
                break
            value = data[rows, self.feature[node]]
            missing = np.isnan(value)
            go_left = value <= self.threshold[node]
            categorical = self.node_categorical[node] & ~missing
            if categorical.any():
                code = np.where(categorical, value, 0).astype(np.int64)
                word, bit = code >> 5, (code & 31).astype(np.uint32)
                in_left = (self.left_bitsets[np.where(categorical, self.bitset[node], 0), word] >> bit) & 1
                known = (self.known_bitsets[np.where(categorical, self.f_idx_map[self.feature[node]], 0), word] >> bit) & 1
                # In the left set: left; known but not in it: right; unknown: as if missing.
                go_left = np.where(categorical, (in_left == 1) | ((known == 0) & self.missing_left[node]), go_left)
            go_left = np.where(missing, self.missing_left[node], go_left)
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
        # The classifier starts from its baseline and adds the trees in order: so does this.
        terms = np.concatenate([np.full((n, 1), self.baseline), self.value[node]], axis=1)
        return np.add.accumulate(terms, axis=1)[:, -1] if n else np.zeros(0)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive class (the classifier's ``predict_proba(x)[:, 1]``)."""
        return expit(self.decision_function(x))


def probe_rows(trees: CompiledTrees, n: int = 256, seed: int = 0) -> np.ndarray:
    """Input rows drawn from every kind of branch: thresholds and the value just above each, every category, unknown ones, NaN."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, trees.n_features))
    split = ~trees.is_leaf & ~trees.node_categorical
    for k, column in enumerate(trees.order):  # the trees' feature k is input column trees.order[k]
        ts = trees.threshold[split & (trees.feature == k)]
        values = np.concatenate([ts, np.nextafter(ts, np.inf)]) if len(ts) else np.zeros(1)
        x[:, column] = rng.choice(values, n)
    for k, known in enumerate(trees.codes):  # categorical columns: their known values and two unknown ones
        x[:, trees.order[k]] = rng.choice(np.concatenate([known, [known.max() + 1, -1.0]]), n)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def compile_trees(classifier: Any) -> CompiledTrees | None:
    """A :class:`CompiledTrees` that agrees with the classifier to the bit on probe rows, else ``None``."""
    if (running := version("scikit-learn")) not in PROVED_ON:
        log.warning("the tree walk was proved on scikit-learn %s, this is %s: its probe decides", PROVED_ON, running)
    try:
        trees = CompiledTrees(classifier)
        probe = probe_rows(trees)
        if np.array_equal(trees.decision_function(probe), classifier.decision_function(probe).reshape(-1)):
            return trees
        log.warning("compiled trees disagree with scikit-learn on probe rows; scoring through scikit-learn")
    except Exception as exc:  # noqa: BLE001 - any surprise in the fitted internals means: do not use it
        log.warning("cannot compile the trees (%s); scoring through scikit-learn", exc)
    return None
