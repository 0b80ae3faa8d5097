"""IMDB reviews: the 25,000 training reviews for students; the 25,000 test reviews are hidden.

Student  imdb_train.jsonl       25,000 lines {"label": 0 or 1, "text": "..."} (1 = positive)
         imdb_train_seq.npz     the same reviews as word indices (see below):
                                tokens (N,) int32, offsets (25001,) int64, y (25000,) uint8
         imdb_word_index.json   Keras' word -> rank index, to decode or to cut the vocabulary
Hidden   imdb_test.jsonl        25,000 lines, same format
         imdb_test_seq.npz      same arrays for the test reviews

Texts are the raw reviews (UTF-8, "<br />" tags kept). Both splits are in a fixed shuffled order
(seed 113), so a validation_split never gets a single class. Review i's sequence is
tokens[offsets[i]:offsets[i+1]], built as keras.datasets.imdb does (index_from=3): 1 starts each
review, 2 marks a word missing from the index, word w is word_index[w] + 3, and 0 is left for
padding. Words come from keras' text_to_word_sequence rules: lower case, the punctuation
!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~ tab and newline become spaces, split on spaces.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from grader.data.npz import save_npz

INPUTS = ["imdb_reviews", "imdb_word_index"]
VERSION = "1"
SEED = 113
START, OOV, INDEX_FROM = 1, 2, 3
FILTERS = str.maketrans({c: " " for c in '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'})


def read_split(root: Path, split: str) -> tuple[list[str], np.ndarray]:
    """The reviews and labels of train/ or test/, in a fixed shuffled order."""
    files = [
        (label, path)
        for label, folder in enumerate(("neg", "pos"))
        for path in sorted(
            (root / split / folder).glob("*.txt"), key=lambda p: int(p.name.split("_")[0])
        )
    ]
    order = np.random.default_rng(SEED).permutation(len(files))
    texts = [files[i][1].read_text(encoding="utf-8") for i in order]
    return texts, np.array([files[i][0] for i in order], dtype=np.uint8)


def encode(texts: list[str], word_index: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat token array and offsets of TEXTS under the index_from=3 convention."""
    index = defaultdict(lambda: OOV, {word: rank + INDEX_FROM for word, rank in word_index.items()})
    tokens: list[int] = []
    offsets = [0]
    for text in texts:
        tokens.append(START)
        tokens.extend(
            map(index.__getitem__, filter(None, text.lower().translate(FILTERS).split(" ")))
        )
        offsets.append(len(tokens))
    return np.array(tokens, dtype=np.int32), np.array(offsets, dtype=np.int64)


def write_split(
    texts: list[str], y: np.ndarray, word_index: Mapping[str, int], folder: Path, stem: str
) -> None:
    """Write STEM.jsonl and STEM_seq.npz into FOLDER."""
    with (folder / f"{stem}.jsonl").open("w", encoding="utf-8", newline="\n") as out:
        for text, label in zip(texts, y):
            out.write(json.dumps({"label": int(label), "text": text}) + "\n")
    tokens, offsets = encode(texts, word_index)
    save_npz(
        folder / f"{stem}_seq.npz", {"tokens": tokens, "offsets": offsets, "y": y}, compress=True
    )


def build(raw: Mapping[str, Path], student: Path, hidden: Path) -> None:
    """Write the training reviews for students and the test reviews for the hidden checks."""
    word_index = json.loads(raw["imdb_word_index"].read_text(encoding="utf-8"))
    shutil.copyfile(raw["imdb_word_index"], student / "imdb_word_index.json")
    write_split(*read_split(raw["imdb_reviews"], "train"), word_index, student, "imdb_train")
    write_split(*read_split(raw["imdb_reviews"], "test"), word_index, hidden, "imdb_test")
