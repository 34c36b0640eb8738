"""Speaker clustering: average-linkage agglomeration on cosine distance, then centroids.

Numpy only (no scipy), so the GPU machine needs nothing beyond torch and numpy.

1. **Dendrogram.** :func:`average_linkage` builds the full average-linkage
   (UPGMA) tree of up to :data:`MAX_LINKAGE_POINTS` embeddings: the generic
   algorithm with cached row minima and Lance-Williams updates, O(n²) memory and
   about O(n²) time, in vectorised steps. Its output has scipy's ``linkage``
   layout, ``(n - 1, 4)`` rows of ``[cluster a, cluster b, distance, size]``.
   A longer recording is clustered on an evenly spread subset of its windows;
   every window is then assigned to the nearest centroid (step 3), so the cost
   of a 3-hour file stays that of ``MAX_LINKAGE_POINTS`` windows.
2. **How many speakers.** Without a stated count the tree is cut at
   ``threshold`` (cosine distance) and the clusters with at least
   ``min_cluster_size`` members are counted; that count is clamped to
   ``[min_speakers, max_speakers]``. With a count, that is the target. The tree
   is then cut at the smallest number of clusters that yields that many large
   clusters, and the largest ones are kept: small clusters (a cough, a window
   straddling two voices) never become speakers of their own.
3. **Assignment.** Each kept cluster's centroid is the normalised mean of its
   members; every embedding goes to its most similar centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_LINKAGE_POINTS = 2000  # embeddings in one dendrogram: 32 MB of float64 distances, ~0.5 s
DEFAULT_THRESHOLD = 0.5  # cosine distance at which two average clusters are different voices
MIN_CLUSTER_SIZE = 3  # members a cluster needs to count as a speaker (≈ 3 s of speech)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SpeakerCount:
    """Bounds on the number of speakers; ``exact`` excludes the other two."""

    exact: int | None = None
    minimum: int = 1
    maximum: int | None = None


def normalise_rows(vectors: npt.ArrayLike) -> FloatArray:
    """Each row scaled to unit length (zero rows stay zero)."""
    array = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    unit: FloatArray = array / np.maximum(norms, np.finfo(np.float64).tiny)
    return unit


def cosine_distances(unit_rows: FloatArray) -> FloatArray:
    """Pairwise ``1 - cos`` of unit-length rows, clipped to [0, 2]."""
    distances: FloatArray = np.clip(1.0 - unit_rows @ unit_rows.T, 0.0, 2.0)
    return distances


def average_linkage(distances: FloatArray) -> FloatArray:
    """Average-linkage merges of a square distance matrix, in scipy's ``linkage`` layout.

    Merge ``i`` creates cluster ``n + i``; distances are non-decreasing (average
    linkage is monotone), so cutting after ``m`` merges is applying the first ``m``.
    """
    n = distances.shape[0]
    merges = np.zeros((max(n - 1, 0), 4), dtype=np.float64)
    if n < 2:
        return merges
    d = np.array(distances, dtype=np.float64, copy=True)
    np.fill_diagonal(d, np.inf)
    size = np.ones(n, dtype=np.float64)
    cluster_id = np.arange(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    row_min = d.min(axis=1)
    row_arg = d.argmin(axis=1)
    for step in range(n - 1):
        i = int(np.argmin(row_min))
        j = int(row_arg[i])
        a, b = sorted((int(cluster_id[i]), int(cluster_id[j])))
        merges[step] = (a, b, row_min[i], size[i] + size[j])
        # Lance-Williams for UPGMA: the size-weighted mean of the two rows. Slot i
        # becomes the merged cluster; slot j is retired.
        merged = (size[i] * d[i] + size[j] * d[j]) / (size[i] + size[j])
        merged[i] = merged[j] = np.inf
        merged[~active] = np.inf
        d[i, :] = merged
        d[:, i] = merged
        d[j, :] = np.inf
        d[:, j] = np.inf
        active[j] = False
        row_min[j] = np.inf
        size[i] += size[j]
        cluster_id[i] = n + step
        row_min[i] = d[i].min()
        row_arg[i] = int(d[i].argmin())
        # Rows whose nearest cluster was i or j must look again; rows that are now
        # closer to the merged cluster than to their old nearest one take it.
        stale = active & ((row_arg == i) | (row_arg == j))
        stale[i] = False
        if stale.any():
            rows = np.flatnonzero(stale)
            row_min[rows] = d[rows].min(axis=1)
            row_arg[rows] = d[rows].argmin(axis=1)
        closer = active & (merged < row_min)
        closer[i] = False
        row_min[closer] = merged[closer]
        row_arg[closer] = i
    return merges


def cut(merges: FloatArray, n: int, *, clusters: int) -> IntArray:
    """Labels ``0..clusters-1`` (in order of first member) after ``n - clusters`` merges."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    clusters = min(max(clusters, 1), n)
    parent = np.arange(2 * n - 1, dtype=np.int64)

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = int(parent[node])
        return node

    for step in range(n - clusters):
        a, b = int(merges[step, 0]), int(merges[step, 1])
        parent[root(a)] = n + step
        parent[root(b)] = n + step
    roots = np.array([root(point) for point in range(n)], dtype=np.int64)
    _, first_index, inverse = np.unique(roots, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_index))  # renumber by first appearance
    labels: IntArray = order[inverse].astype(np.int64)
    return labels


def clusters_below(merges: FloatArray, n: int, threshold: float) -> int:
    """How many clusters remain when every merge at distance <= ``threshold`` is applied."""
    if n == 0:
        return 0
    return n - int(np.count_nonzero(merges[:, 2] <= threshold))


def _large_clusters(labels: IntArray, min_size: int) -> list[int]:
    """Labels of clusters with at least ``min_size`` members, largest first."""
    counts = np.bincount(labels)
    order = sorted(range(counts.size), key=lambda label: (-int(counts[label]), label))
    return [label for label in order if counts[label] >= min_size]


def cluster_embeddings(
    embeddings: npt.ArrayLike,
    count: SpeakerCount,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_cluster_size: int = MIN_CLUSTER_SIZE,
    max_linkage_points: int = MAX_LINKAGE_POINTS,
) -> IntArray:
    """A speaker index per embedding (0..k-1, in order of first appearance)."""
    unit = normalise_rows(embeddings)
    total = unit.shape[0]
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    if total == 1:
        return np.zeros(1, dtype=np.int64)
    # An evenly spread, deterministic subset keeps the dendrogram's cost bounded.
    if total > max_linkage_points:
        subset = np.linspace(0, total - 1, max_linkage_points).round().astype(np.int64)
    else:
        subset = np.arange(total, dtype=np.int64)
    sample = unit[subset]
    n = sample.shape[0]
    merges = average_linkage(cosine_distances(sample))
    # Few windows (a short recording) cannot have many of a large cluster's members.
    min_size = max(1, min(min_cluster_size, n // 4))

    if count.exact is not None:
        target = count.exact
    else:
        natural = cut(merges, n, clusters=clusters_below(merges, n, threshold))
        target = max(1, len(_large_clusters(natural, min_size)), count.minimum)
        if count.maximum is not None:
            target = min(target, count.maximum)
    target = min(target, n)

    kept: list[int] = []
    labels = cut(merges, n, clusters=target)
    for clusters in range(target, n + 1):
        labels = cut(merges, n, clusters=clusters)
        large = _large_clusters(labels, min_size)
        if len(large) >= target:
            kept = large[:target]
            break
    if not kept:  # no cut has enough large clusters: keep the largest of the coarsest cut
        labels = cut(merges, n, clusters=target)
        kept = _large_clusters(labels, 1)[:target]

    centroids = normalise_rows(np.stack([sample[labels == label].mean(axis=0) for label in kept]))
    nearest = np.argmax(unit @ centroids.T, axis=1)
    # Renumber so speaker 0 speaks first.
    _, first_index = np.unique(nearest, return_index=True)
    order = np.empty(len(kept), dtype=np.int64)
    present = np.unique(nearest)
    order[present[np.argsort(first_index)]] = np.arange(present.size)
    result: IntArray = order[nearest].astype(np.int64)
    return result
