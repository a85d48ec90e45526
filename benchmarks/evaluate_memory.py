"""`fakefinder evaluate` memory: peak RSS on 1,000 vs 10,000 manifest rows must stay flat
(images stream through a loader; only scores are kept).

    .venv/bin/python benchmarks/evaluate_memory.py --checkpoint output/dfdc-faces-cpu/model

Rows are the dfdc-faces test crops repeated (distinct video ids) when ../shared is present, or
generated crops otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "dfdc-faces"


def make_manifest(folder: Path, rows: int) -> Path:
    if (SHARED / "metadata.csv").is_file():
        source = pd.read_csv(SHARED / "metadata.csv")
        source = source[source.split == "test"]
        base = pd.DataFrame({"path": [str(SHARED / f) for f in source.file], "label": source.label})
    else:
        from PIL import Image

        from fakefinder.synthetic import identity_face

        images = folder / "crops"
        images.mkdir(parents=True, exist_ok=True)
        paths, labels = [], []
        for n in range(200):
            label = "fake" if n % 2 else "real"
            Image.fromarray(identity_face(n // 2, fake=label == "fake")).resize((224, 224)).save(
                images / f"{n}.jpg"
            )
            paths.append(str(images / f"{n}.jpg"))
            labels.append(label)
        base = pd.DataFrame({"path": paths, "label": labels})
    repeats = -(-rows // len(base))
    frame = pd.concat([base] * repeats, ignore_index=True).iloc[:rows].copy()
    frame["video_id"] = [f"v{i}" for i in range(len(frame))]
    frame["split"] = "test"
    frame["dataset"] = "bench"
    path = folder / f"manifest_{rows}.csv"
    frame.to_csv(path, index=False)
    return path


CHILD = """
import json, resource, sys
import fakefinder
from fakefinder.config import config_from_dict
from fakefinder.tasks.classification.scoring import load_detector
checkpoint, manifest, out = sys.argv[1:4]
config = config_from_dict(load_detector(checkpoint).artifact.training["config"])
config.evaluate.models = [checkpoint]
config.evaluate.sets = [{"name": "bench", "manifest": manifest, "split": "test"}]
config.evaluate.output_dir = out
result = fakefinder.evaluate(config)
row = result.tables["summary"][0]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": row["n"], "peak_rss_mb": peak}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="output/dfdc-faces-cpu/model")
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            manifest = make_manifest(Path(tmp), rows)
            done = subprocess.run(
                [sys.executable, "-c", CHILD, args.checkpoint, str(manifest), str(Path(tmp) / f"eval{rows}")],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(
                f"  {results[-1]['rows']:>6} rows: peak RSS {results[-1]['peak_rss_mb']:.0f} MB", flush=True
            )
    ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "evaluate_memory.json").write_text(
        json.dumps({"runs": results, "ratio": ratio}, indent=1)
    )
    print(f"peak RSS ratio {results[-1]['rows']} / {results[0]['rows']} rows: {ratio:.2f}")


if __name__ == "__main__":
    main()
