"""Rebuild mtl/demo_data from the full splits (a folder with ag_news/ and tweet_eval_sentiment/, e.g. data/): a
seeded random sample of each split.

    python scripts/make_demo_data.py data
"""

import random
import sys
from pathlib import Path

SAMPLES = {"train": 2000, "validation": 500}
DATASETS = ("ag_news", "tweet_eval_sentiment")


def main(source: Path, target: Path) -> None:
    for dataset in DATASETS:
        (target / dataset).mkdir(parents=True, exist_ok=True)
        for split, count in SAMPLES.items():
            lines = (source / dataset / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
            sample = random.Random(0).sample(lines, count)
            (target / dataset / f"{split}.jsonl").write_text("\n".join(sample) + "\n", encoding="utf-8")
            print(f"{dataset}/{split}: {count} of {len(lines)} rows")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parent.parent / "mtl" / "demo_data")
