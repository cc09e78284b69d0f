"""Build the bundled `mnist-mini` digit source from ../shared/data/mnist-5k.

5,000 real MNIST *training* digits (500 per class) are split, stratified and disjoint,
into 4,000 train (400 per class) and 1,000 test (100 per class) with a fixed seed, and
written as gzip IDX files (mtime 0, so the bytes are reproducible) into the package.

    python scripts/build_mnist_mini.py [SRC_DIR]
"""

import sys
from pathlib import Path

import numpy as np

from lgdram_cli.data import idx

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "mnist-5k"
OUT = ROOT / "src" / "lgdram_cli" / "data" / "mnist_mini"


def main() -> None:
    images_path = SRC / "mnist5k-images-idx3-ubyte.gz"
    labels_path = SRC / "mnist5k-labels-idx1-ubyte.gz"
    images = idx.parse_images(idx.read_bytes(images_path), images_path)
    labels = idx.parse_labels(idx.read_bytes(labels_path), labels_path)
    rng = np.random.default_rng(20141207)  # fixed: the split is part of the release
    train, test = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        cut = len(members) * 4 // 5
        train.append(members[:cut])
        test.append(members[cut:])
    for split, parts in (("train", train), ("t10k", test)):
        order = rng.permutation(np.concatenate(parts))  # mix classes
        idx.write_atomic(OUT / f"{split}-images-idx3-ubyte.gz", idx.encode_images(images[order]))
        idx.write_atomic(OUT / f"{split}-labels-idx1-ubyte.gz", idx.encode_labels(labels[order]))
        print(f"{split}: {len(order)} digits, per class {np.bincount(labels[order]).tolist()}")


if __name__ == "__main__":
    main()
