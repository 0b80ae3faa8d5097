"""MovieLens 100k: each user's ratings minus 10 held-out ones for students; those 10 are hidden.

Student  movielens_train.npz  ratings (943, 1682) float32: rating 1-5, 0 where unknown or held out
                              user, item (90570,) int32 (0-based), rating (90570,) float32
                              titles (1682,) str, genres (1682, 19) uint8, genre_names (19,) str
Hidden   movielens_test.npz   user, item (9430,) int32 (0-based), rating (9430,) float32

User u and movie m of the files (1-based ids in u.data) are row u-1 and column m-1. Every user
rated at least 20 movies; 10 of each user's ratings, drawn with a fixed seed, are held out, like
GroupLens' own ua/ub splits. The triples are sorted by user, then movie.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from grader.data.npz import save_npz

INPUTS = ["movielens"]
VERSION = "1"
SEED = 20240601
HELD_OUT = 10  # ratings per user


def load_ratings(root: Path) -> np.ndarray:
    """u.data as an (n, 3) int array of 0-based user, 0-based movie, rating; sorted."""
    table = np.loadtxt(root / "u.data", dtype=np.int64, usecols=(0, 1, 2))
    table[:, :2] -= 1
    return table[np.lexsort((table[:, 1], table[:, 0]))]


def hold_out(table: np.ndarray) -> np.ndarray:
    """A boolean mask with HELD_OUT randomly chosen ratings of each user set."""
    rng = np.random.default_rng(SEED)
    mask = np.zeros(len(table), dtype=bool)
    starts = np.flatnonzero(np.r_[True, table[1:, 0] != table[:-1, 0]])
    for start, stop in zip(starts, [*starts[1:], len(table)]):
        mask[start + rng.choice(stop - start, HELD_OUT, replace=False)] = True
    return mask


def movies(root: Path) -> dict[str, np.ndarray]:
    """Titles and genre flags from u.item, genre names from u.genre."""
    rows = [line.split("|") for line in (root / "u.item").read_text("latin-1").splitlines()]
    genres = [
        line.split("|")[0]
        for line in (root / "u.genre").read_text("latin-1").splitlines()
        if line.strip()
    ]
    return {
        "titles": np.array([row[1] for row in rows]),
        "genres": np.array([row[5:] for row in rows], dtype=np.uint8),
        "genre_names": np.array(genres),
    }


def triples(table: np.ndarray) -> dict[str, np.ndarray]:
    """The user, item, rating columns with the dtypes the README promises."""
    return {
        "user": table[:, 0].astype(np.int32),
        "item": table[:, 1].astype(np.int32),
        "rating": table[:, 2].astype(np.float32),
    }


def build(raw: Mapping[str, Path], student: Path, hidden: Path) -> None:
    """Write the training matrix and triples for students and the held-out ratings hidden."""
    root = raw["movielens"]
    table = load_ratings(root)
    info = movies(root)
    mask = hold_out(table)
    train = table[~mask]
    ratings = np.zeros((int(table[:, 0].max()) + 1, len(info["titles"])), dtype=np.float32)
    ratings[train[:, 0], train[:, 1]] = train[:, 2]
    save_npz(
        student / "movielens_train.npz",
        {"ratings": ratings, **triples(train), **info},
        compress=True,
    )
    save_npz(hidden / "movielens_test.npz", triples(table[mask]), compress=True)
