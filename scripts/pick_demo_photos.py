"""Copy the demo's sample photos from LFW into assets/demo_photos/ by a fixed rule (never by score).

Rule: in list order of LFW View-2 people sets 1-4 (training people), the first ``--people``
persons with 3+ images give their first 3 images (image 1 enrolls, 2 and 3 are genuine probes);
the next person with exactly one image is the stranger (never enrolled: an impostor probe and
the open-set identification case). Original 250x250 LFW JPEGs, so the demo runs the real
detection + alignment on them.

    python scripts/pick_demo_photos.py --people 4
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from hyperver.config import load_config
from hyperver.data.lfw import LFWDataset
from hyperver.data.split import LFWSplit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=4)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--out", default="assets/demo_photos")
    args = ap.parse_args()
    cfg = load_config()
    lfw = LFWDataset(Path(cfg.get_path("data.root")) / "lfw")
    people = LFWSplit(lfw).people("train")
    chosen = [name for name, n in people if n >= args.images][:args.people]
    last = max(i for i, (name, _) in enumerate(people) if name in chosen)
    stranger = next(name for name, n in people[last + 1:] if n == 1)
    out = Path(args.out)
    manifest = {"rule": __doc__.split("\n\n")[1].replace("\n", " "), "enrolled": {}, "stranger": None}
    for name, k in [(p, args.images) for p in chosen] + [(stranger, 1)]:
        files = []
        for i in range(1, k + 1):
            src = lfw.record(name, i).path
            dst = out / name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            files.append(f"{name}/{src.name}")
        if name == stranger:
            manifest["stranger"] = files[0]
        else:
            manifest["enrolled"][name] = {"enroll": files[0], "probes": files[1:]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
