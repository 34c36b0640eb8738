import itertools

import numpy as np
import pytest
from steno_inference.alignment import dtw_path, split_words

pytestmark = pytest.mark.unit


def _brute_force_cost(cost: np.ndarray) -> float:
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0
    for i, j in itertools.product(range(1, n + 1), range(1, m + 1)):
        acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    return float(acc[n, m])


@pytest.mark.parametrize("seed", range(5))
def test_dtw_path_is_optimal_and_monotonic(seed: int):
    rng = np.random.default_rng(seed)
    cost = rng.normal(size=(7, 23))
    rows, cols = dtw_path(cost)
    assert rows[0] == 0 and cols[0] == 0 and rows[-1] == 6 and cols[-1] == 22
    assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)
    assert np.all(np.diff(rows) + np.diff(cols) >= 1)
    assert cost[rows, cols].sum() == pytest.approx(_brute_force_cost(cost))


def test_split_words_by_spaces_and_punctuation():
    vocab = {1: " Hello", 2: ",", 3: " wor", 4: "ld", 5: "!", 9: "<eot>"}

    def decode(ids: list[int]) -> str:
        return "".join(vocab[i] for i in ids)

    words, groups = split_words([1, 2, 3, 4, 5, 9], decode, eot=9, language="en")
    assert words == [" Hello", ",", " world", "!", "<eot>"]
    assert groups == [[1], [2], [3, 4], [5], [9]]
