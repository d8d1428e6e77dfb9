"""Health statistics of an encoder's embeddings: is it collapsing, how many directions
does it use, how tight are positives and how spread is everything.

Pure NumPy on a (videos, d) feature matrix, such as the kNN monitor's memory bank:

- `embedding_std`: the mean over dimensions of the per-dimension standard deviation of
  the L2-normalized embeddings. About 1/sqrt(d) when the embeddings spread over the
  sphere, 0 when they collapse to one point (SimSiam, Chen & He 2021, §4.1).
- `effective_rank`: exp of the entropy of the normalized singular values of the centred
  features (Roy & Vetterli 2007): 1 when every row varies along one direction, d for
  equal spread over d orthogonal directions; at most min(rows - 1, d).

The rank and the pairwise statistics use at most `MAX_ROWS` rows, evenly spaced.
- `alignment`: mean squared distance between the normalized embeddings of positive
  pairs (Wang & Isola 2020, alpha = 2); 0 when positives coincide, at most 4.
- `uniformity`: log of the mean Gaussian potential exp(-t ||x - y||^2) over all pairs of
  normalized embeddings (Wang & Isola 2020, t = 2); 0 when all coincide, more negative
  the more uniform.
"""
from __future__ import annotations

import numpy as np

# Below this fraction of 1/sqrt(d) the embedding counts as collapsed (a collapsed one
# reads ~0). Not SimSiam's 1/sqrt(d) itself: that is the spread of projector outputs,
# while the monitor reads backbone features, pooled after a ReLU and so all in one
# orthant; randomly initialized Slow R-18 and R-50 (1/4 width) read 0.22/sqrt(d) and
# 0.16/sqrt(d) on random 4x32x32 clips. 0.01 stays an order of magnitude under that.
COLLAPSE_FRACTION = 0.01
# The rank and the pairwise statistics look at this many rows at most (evenly spaced):
# an SVD of n rows and n^2 distances stay cheap for a bank of any size.
MAX_ROWS = 2048


def _normalized(features) -> np.ndarray:
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embedding statistics: expected a (rows, dims) matrix with rows, "
                         f"got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def embedding_std(features) -> float:
    """Mean over dimensions of the per-dimension std of the L2-normalized rows."""
    return float(np.mean(np.std(_normalized(features), axis=0)))


def collapse_threshold(dims: int) -> float:
    """The `embedding_std` under which a d-dimensional embedding counts as collapsed."""
    return COLLAPSE_FRACTION / np.sqrt(dims)


def effective_rank(features) -> float:
    """exp(entropy of p), p the singular values of the centred rows over their sum
    (Roy & Vetterli 2007); 1.0 for rows that do not vary at all."""
    x, _ = _subsample(np.asarray(features, np.float64))
    singular = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    total = singular.sum()
    if total <= 1e-9 * np.linalg.norm(x):  # constant rows (up to rounding)
        return 1.0
    p = singular[singular > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def _subsample(x: np.ndarray, labels=None):
    if x.shape[0] <= MAX_ROWS:
        return x, labels
    rows = np.linspace(0, x.shape[0] - 1, MAX_ROWS).astype(int)
    return x[rows], None if labels is None else np.asarray(labels)[rows]


def _squared_distances(x: np.ndarray) -> np.ndarray:
    # Unit rows: ||a - b||^2 = 2 - 2 a.b (clipped: rounding can go below 0).
    return np.clip(2.0 - 2.0 * x @ x.T, 0.0, 4.0)


def alignment(features, groups, alpha: float = 2.0) -> float | None:
    """Mean ||x_i - x_j||^alpha of the normalized rows over the pairs i < j of the same
    group (a positive pair); None when no group has two rows."""
    x, groups = _subsample(_normalized(features), np.asarray(groups))
    same = np.triu(groups[:, None] == groups[None, :], k=1)
    if not same.any():
        return None
    return float(np.mean(_squared_distances(x)[same] ** (alpha / 2)))


def uniformity(features, t: float = 2.0) -> float | None:
    """log mean exp(-t ||x_i - x_j||^2) over the pairs i < j of normalized rows; None
    for fewer than two rows."""
    x, _ = _subsample(_normalized(features))
    if x.shape[0] < 2:
        return None
    upper = np.triu_indices(x.shape[0], k=1)
    potentials = -t * _squared_distances(x)[upper]
    top = potentials.max()  # log-mean-exp, stable
    return float(top + np.log(np.mean(np.exp(potentials - top))))


def health(features, groups) -> dict[str, float]:
    """The four statistics by name (`alignment` over same-`groups` pairs); a statistic
    that is undefined for these rows is left out."""
    values = {"embedding_std": embedding_std(features),
              "effective_rank": effective_rank(features),
              "alignment": alignment(features, groups), "uniformity": uniformity(features)}
    return {name: value for name, value in values.items() if value is not None}
