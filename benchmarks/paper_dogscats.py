"""Paper Table 1 on dogscats: `python benchmarks/paper_dogscats.py [--n 100] [--attacks ...] [--quick]`.

The same code as `rpdetect evaluate --dataset dogscats` (rpdetect.evaluation.pipeline); results go
to benchmarks/results/dogscats/, intermediates to cache/eval/dogscats/full/ (a killed run resumes).
"""

import sys
from pathlib import Path

from rpdetect.cli import main

if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent  # the repository
    sys.exit(main(["evaluate", "--dataset", "dogscats", "--out", str(root / "benchmarks" / "results" / "dogscats"),
                   "--cache", str(root / "cache" / "eval"), *sys.argv[1:]]))
