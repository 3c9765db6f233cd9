"""Derive where dlib's 5-point landmarks sit in the 112x112 ArcFace frame.

dlib's 5-point model gives eye corners and the nose base, not ArcFace's eye centres, nose tip
and mouth corners. dlib's 68-point model gives both kinds of points on the same face, so on
LFW *training* images (sets 1-4) we align each face to ArcFace's template from its 68-point
landmarks and average where the 5-point model's points land. The printed array is
``hyperver.align.templates.DLIB5_IN_ARCFACE_112``.

    python scripts/derive_dlib5_template.py --n 600
"""
from __future__ import annotations

import argparse

import dlib
import face_recognition_models
import numpy as np
from tqdm import tqdm

from hyperver.align.templates import ARCFACE_112, apply_transform, estimate_similarity
from hyperver.config import load_config
from hyperver.data import LFWSplit, load_image, open_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=600, help="number of LFW training images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = load_config()
    records = LFWSplit(open_dataset(cfg, "lfw")).records("train")
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(records), size=min(args.n, len(records)), replace=False)
    det = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    sp68 = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    landed = []
    for idx in tqdm(picks, desc="faces"):
        img = load_image(records[idx].path)
        rects = det(img, 0)
        if len(rects) != 1:
            continue
        p68 = np.array([[p.x, p.y] for p in sp68(img, rects[0]).parts()], float)
        p5 = np.array([[p.x, p.y] for p in sp5(img, rects[0]).parts()], float)
        arc = np.stack([p68[36:42].mean(0), p68[42:48].mean(0), p68[30], p68[48], p68[54]])
        m = estimate_similarity(arc, ARCFACE_112)
        landed.append(apply_transform(m, p5))
    landed = np.stack(landed)
    print(f"faces used: {len(landed)}; per-point std (px): {np.round(landed.std(0).mean(1), 2).tolist()}")
    print("DLIB5_IN_ARCFACE_112 =", np.array2string(np.round(np.median(landed, 0), 4), separator=", "))


if __name__ == "__main__":
    main()
