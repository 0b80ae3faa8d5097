"""Hidden checks of assignment06: the student's recommendations against the held-out ratings.

The held-out ratings are read here, in the trusted process; only the student's `scores` array
crosses from the kernel."""

import numpy as np
import pytest

from grader.checks import StudentValueError

TOP = 10
LIKED = 4  # a held-out film the user rated 4 or 5 is a hit
# precision@10 relative to the popularity baseline the checker computes itself. Measured
# over four seeds (assignments/assignment06/README.md): the reference 1.19-1.22 times popularity;
# an RBM whose statistics count the unrated films 0.99-1.04; the slides' probabilities alone
# 0.37-0.39 (0.38-0.55 in quicker settings). Full points for doing at least as well as
# popularity: a wrong mask loses the cd_step check's points, not these as well.
TIERS = [(1.0, 1.0), (0.9, 0.5), (0.7, 0.25)]
RANDOM_DRAWS = 20
USER = 0  # the user whose recommendations the feedback page shows


def _scores(submission, shape: tuple[int, int]) -> np.ndarray:
    """The student's scores, checked for shape and finiteness."""
    scores = submission.array("scores")
    if scores.shape != shape:
        raise StudentValueError(
            f"scores should have shape {shape} (one score per user and film), found"
            f" {scores.shape}")
    scores = scores.astype(float)
    if not np.all(np.isfinite(scores)):
        raise StudentValueError(
            f"scores holds {int(np.sum(~np.isfinite(scores)))} NaN or infinite values: every"
            " user and film needs a number")
    return scores


def _liked(hidden, shape: tuple[int, int]) -> np.ndarray:
    """(users, films): True where a held-out rating is 4 or 5."""
    with np.load(hidden / "movielens_test.npz") as data:
        user, item, rating = data["user"], data["item"], data["rating"]
    liked = np.zeros(shape, dtype=bool)
    liked[user, item] = rating >= LIKED
    return liked


def _top(scores: np.ndarray, rated: np.ndarray) -> np.ndarray:
    """Each user's TOP best-scored films among those not rated in the training data."""
    free = np.where(rated, -np.inf, scores)
    return np.argsort(-free, axis=1, kind="stable")[:, :TOP]


def _precision(top: np.ndarray, liked: np.ndarray) -> float:
    """Precision@TOP averaged over users."""
    return float(np.take_along_axis(liked, top, axis=1).mean())


def _figure(mine: float, popular: float, chance: float):
    """A bar chart of the three precisions."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.0))
    bars = ax.bar(["your RBM", "popularity", "random"], [mine, popular, chance],
                  color=["tab:blue", "tab:gray", "tab:gray"])
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylabel(f"precision@{TOP}")
    ax.set_ylim(0, max(mine, popular, chance) * 1.25 + 1e-3)
    fig.tight_layout()
    return fig


def _titles(titles: np.ndarray, films) -> str:
    """Titles, one a line (the feedback page escapes them)."""
    return "\n".join(f"- {titles[f]}" for f in films)


@pytest.mark.points(2)
def test_recommendations(submission, hidden, train_ratings, credit, feedback):
    """Your top-10 films for each user find held-out films the user liked (precision@10)"""
    ratings, titles = train_ratings
    scores = _scores(submission, ratings.shape)
    rated = ratings > 0
    liked = _liked(hidden, ratings.shape)
    top = _top(scores, rated)
    mine = _precision(top, liked)
    popularity = np.tile((ratings >= LIKED).sum(axis=0).astype(float), (len(ratings), 1))
    popular = _precision(_top(popularity, rated), liked)
    rng = np.random.default_rng(0)
    chance = float(np.mean([_precision(_top(rng.random(scores.shape), rated), liked)
                            for _ in range(RANDOM_DRAWS)]))
    feedback.figure(_figure(mine, popular, chance),
                    f"Precision@{TOP} on the held-out ratings: your scores, the films most liked"
                    " by everybody, and films drawn at random")
    best = np.flatnonzero(ratings[USER] == ratings[USER].max())[:TOP]
    feedback.text(f"What your RBM recommends to user {USER}",
                  f"User {USER} rated these films best:\n{_titles(titles, best)}\n\n"
                  f"Your scores recommend:\n{_titles(titles, top[USER])}")
    credit.tiers(mine / popular, TIERS,
                 f"precision@{TOP} relative to popularity ({mine:.3f} against {popular:.3f};"
                 f" random {chance:.3f})")
