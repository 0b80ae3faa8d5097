"""Cats vs dogs: 2,000 training and 500 validation JPEGs for students; 500 more are hidden.

Student  cats_and_dogs/train/cats/cat.0.jpg ... cat.999.jpg          1,000
         cats_and_dogs/train/dogs/dog.0.jpg ... dog.999.jpg          1,000
         cats_and_dogs/validation/cats/cat.2000.jpg ... cat.2249.jpg   250
         cats_and_dogs/validation/dogs/dog.2000.jpg ... dog.2249.jpg   250
Hidden   cats_and_dogs_test/cats/cat.2250.jpg ... cat.2499.jpg         250
         cats_and_dogs_test/dogs/dog.2250.jpg ... dog.2499.jpg         250

The published set has train 2x1000 and validation 2x500 only, so the hidden test images are the
upper half (by number) of each validation class, and students validate on the lower half. The
folders suit keras.utils.image_dataset_from_directory and flow_from_directory as they are.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

INPUTS = ["cats_and_dogs"]
VERSION = "1"
CLASSES = ("cats", "dogs")
FIRST_HIDDEN = 2250  # validation images numbered from here on are hidden


def number(image: Path) -> int:
    """The number in cat.2250.jpg."""
    return int(image.name.split(".")[1])


def copy(images: list[Path], folder: Path) -> None:
    """Copy IMAGES (bytes only, no timestamps) into FOLDER."""
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copyfile(image, folder / image.name)


def build(raw: Mapping[str, Path], student: Path, hidden: Path) -> None:
    """Copy training images, the lower validation half for students and the upper half hidden."""
    root = raw["cats_and_dogs"]
    for label in CLASSES:
        copy(
            sorted((root / "train" / label).glob("*.jpg")),
            student / "cats_and_dogs" / "train" / label,
        )
        validation = sorted((root / "validation" / label).glob("*.jpg"), key=number)
        copy(
            [p for p in validation if number(p) < FIRST_HIDDEN],
            student / "cats_and_dogs" / "validation" / label,
        )
        copy(
            [p for p in validation if number(p) >= FIRST_HIDDEN],
            hidden / "cats_and_dogs_test" / label,
        )
