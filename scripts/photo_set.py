"""Write a set of photographs to try the model-quality signals with: variants of
scikit-image's colour photographs (crops, flips, small rotations, colour jitter, JPEG),
optionally changed as an upstream camera or pipeline could change them.

    .venv/bin/python scripts/photo_set.py DIR [--count 600] [--seed 1] \\
        [--change darkened|blurred|greyscale|jpeg10]

Two seeds give two disjoint sets made the same way (a reference, then a day's traffic).
Needs the dev dependencies (``make install-dev``: scikit-image ships the photographs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.photo_variants import blurred, darkened, greyscale, variants, write_set

CHANGES = {"darkened": darkened, "blurred": blurred, "greyscale": greyscale}


def main() -> None:
    """Parse the arguments and write the set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--change", choices=[*CHANGES, "jpeg10"])
    args = parser.parse_args()
    change = CHANGES.get(args.change or "")
    quality = 10 if args.change == "jpeg10" else None
    paths = write_set(
        args.directory,
        variants(args.count, args.seed),
        change,
        quality=quality,
        seed=args.seed + 10,
    )
    print(f"{len(paths)} images in {args.directory}")


if __name__ == "__main__":
    main()
