#!/usr/bin/env python3
"""Reference values for the uno-objectives tests (numpy only, float64).

Run `python3 tools/objectives_reference.py`; every number it prints is pasted into
crates/uno-objectives/tests/*.rs next to the test that uses it. The cases are tiny on
purpose: each is also hand-checkable from the comments in the tests.
"""

import math

import numpy as np


def flow_loss(pred, target):
    per_token = ((pred - target) ** 2).mean(axis=1)  # mean over channels
    return per_token.sum(), per_token.mean(), len(per_token)


def caption_ce(logits, labels, ignore=2**32 - 1):
    used = [(i, l) for i, l in enumerate(labels) if l != ignore]
    terms = []
    for i, l in used:
        row = logits[i]
        m = row.max()
        lse = m + math.log(np.exp(row - m).sum())
        terms.append(lse - row[l])
    s = float(sum(terms))
    return s, s / len(terms), len(terms)


def cosine_loss(pred, target, eps=1e-8):
    na = np.maximum(np.linalg.norm(pred, axis=1), eps)
    nb = np.maximum(np.linalg.norm(target, axis=1), eps)
    cos = (pred * target).sum(axis=1) / (na * nb)
    per = 1.0 - cos
    return per.sum(), per.mean(), len(per)


def adaptive_avg_pool(grid, side):
    """PyTorch adaptive_avg_pool2d bins on an [h, w, D] grid, raster-ordered [side^2, D]."""
    h, w, d = grid.shape
    out = []
    for oy in range(side):
        y0, y1 = (oy * h) // side, -((-(oy + 1) * h) // side)
        for ox in range(side):
            x0, x1 = (ox * w) // side, -((-(ox + 1) * w) // side)
            out.append(grid[y0:y1, x0:x1].reshape(-1, d).mean(axis=0))
    return np.array(out)


def main():
    np.set_printoptions(precision=9, suppress=True)
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    target = np.array([[0.0, 0.0], [1.0, 1.0]])
    print("flow (sum, mean, count):", flow_loss(pred, target))

    logits = np.array(
        [[0.0, 0.0, 0.0], [0.0, math.log(2.0), math.log(5.0)], [100.0, -100.0, 3.0]]
    )
    labels = [1, 2, 2**32 - 1]
    print("caption (sum, mean, count):", caption_ce(logits, labels))

    mq = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    mq_t = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    print("visual (sum, mean, count):", cosine_loss(mq, mq_t))

    f = flow_loss(pred, target)[1]
    c = caption_ce(logits, labels)[1]
    v = cosine_loss(mq, mq_t)[1]
    print("total (0.1, 0.2):", f + 0.1 * c + 0.2 * v)
    fs, cs, vs = flow_loss(pred, target)[0], caption_ce(logits, labels)[0], cosine_loss(mq, mq_t)[0]
    print("global (4, 4, 6), scale 1:", fs / 4, cs / 4, vs / 6, fs / 4 + 0.1 * cs / 4 + 0.2 * vs / 6)

    g = np.arange(16.0).reshape(4, 4, 1)
    g = np.concatenate([g, 100.0 + g], axis=2)
    print("pool 4x4 -> 2x2:\n", adaptive_avg_pool(g, 2))
    print("pool 5x5 -> 2x2:\n", adaptive_avg_pool(np.arange(25.0).reshape(5, 5, 1), 2))
    print("pool 3x4 -> 2x2:\n", adaptive_avg_pool(np.arange(12.0).reshape(3, 4, 1), 2))


if __name__ == "__main__":
    main()
