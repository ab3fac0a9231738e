#!/usr/bin/env python3
"""Writes a toy labelled dataset, one small CSV file per sample, to seal into a capsule.

Each sample is 16 features and a label (0 or 1) on one line, drawn from two Gaussian clouds
that a linear model separates well. Files go into 100-sample folders, as image datasets do.

  make_data.py OUT_DIR [--samples N] [--seed S]
"""
import argparse
import os
import random

FEATURES = 16


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # The two classes' centres differ by one unit on every feature.
    centre = [rng.uniform(-1, 1) for _ in range(FEATURES)]
    for i in range(args.samples):
        label = i % 2
        x = [c + (0.5 if label else -0.5) + rng.gauss(0, 0.6) for c in centre]
        folder = os.path.join(args.out_dir, "%03d" % (i // 100))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "sample-%06d.csv" % i), "w") as f:
            f.write(",".join("%.5f" % v for v in x) + ",%d\n" % label)
    print("wrote %d samples to %s" % (args.samples, args.out_dir))


if __name__ == "__main__":
    main()
