#!/usr/bin/env python3
"""Trains a logistic regression on samples read from a mounted capsule by worker processes.

The training loop is a stand-in for a real one; what it shows is the reading pattern a training
job has on a `capsule mount`: the sample list comes from walking the mount, every epoch visits
the samples in a new random order, and several worker processes open and parse the files (as
PyTorch's DataLoader does with num_workers), each read served by the site's verifier daemon
from authenticated, decrypted chunks. Nothing is copied out of the mount.

  train.py DATA_DIR [--workers N] [--epochs E] [--batch B] [--loader multiprocessing|torch]

--loader torch uses torch.utils.data.DataLoader (Debian package python3-torch) instead of a
multiprocessing pool; the default is plain Python. Prints one line per epoch and a summary;
exits 1 when the data folder holds no samples.
"""
import argparse
import math
import multiprocessing
import os
import random
import sys
import time


def list_samples(root):
    """Every sample file below root, sorted (the mount lists only permitted files)."""
    paths = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        paths.extend(os.path.join(folder, f) for f in sorted(files) if f.endswith(".csv"))
    return paths


def load_batch(paths):
    """Worker: reads and parses the files of one batch. Returns (pid, bytes, samples)."""
    samples, size = [], 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        size += len(data)
        values = data.decode().strip().split(",")
        samples.append(([float(v) for v in values[:-1]], int(values[-1])))
    return os.getpid(), size, samples


def batches_multiprocessing(pool, paths, batch):
    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    return pool.imap_unordered(load_batch, chunks)


def batches_torch(paths, batch, workers):
    import torch.utils.data as tud  # only with --loader torch

    class Files(tud.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return load_batch([paths[i]])

    loader = tud.DataLoader(Files(), batch_size=batch, shuffle=False, num_workers=workers,
                            collate_fn=lambda items: items)
    for items in loader:
        yield (items[0][0], sum(i[1] for i in items), [s for i in items for s in i[2]])


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--loader", choices=["multiprocessing", "torch"],
                        default="multiprocessing")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    paths = list_samples(args.data_dir)
    if not paths:
        print("no samples (*.csv) under %s" % args.data_dir, file=sys.stderr)
        return 1
    rng = random.Random(args.seed)
    weights, bias = None, 0.0
    pids, total_bytes, total_reads = set(), 0, 0
    started = time.monotonic()
    pool = None
    if args.loader == "multiprocessing":
        pool = multiprocessing.get_context("fork").Pool(args.workers)
    try:
        for epoch in range(1, args.epochs + 1):
            order = paths[:]
            rng.shuffle(order)
            if pool is not None:
                stream = batches_multiprocessing(pool, order, args.batch)
            else:
                stream = batches_torch(order, args.batch, args.workers)
            loss, correct, seen = 0.0, 0, 0
            for pid, size, samples in stream:
                pids.add(pid)
                total_bytes += size
                total_reads += len(samples)
                for x, y in samples:
                    if weights is None:
                        weights = [0.0] * len(x)
                    p = sigmoid(sum(w * v for w, v in zip(weights, x)) + bias)
                    q = min(max(p, 1e-12), 1.0 - 1e-12)
                    loss -= math.log(q) if y else math.log(1.0 - q)
                    correct += int((p >= 0.5) == bool(y))
                    seen += 1
                    g = p - y
                    weights = [w - args.lr * g * v for w, v in zip(weights, x)]
                    bias -= args.lr * g
            print("epoch %d: %d samples, loss %.4f, accuracy %.3f" %
                  (epoch, seen, loss / seen, correct / seen))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    elapsed = time.monotonic() - started
    print("read %d files (%d bytes) in %.2f s with %d worker processes (%s)" %
          (total_reads, total_bytes, elapsed, len(pids), args.loader))
    return 0


if __name__ == "__main__":
    sys.exit(main())
