"""Paper Table 1 on imagenette: `python benchmarks/paper_imagenette.py [--n 100] [--attacks ...] [--quick]`.

The same code as `rpdetect evaluate --dataset imagenette` (rpdetect.evaluation.pipeline); results go
to benchmarks/results/imagenette/, intermediates to cache/eval/imagenette/full/ (a killed run resumes).
"""

import sys
from pathlib import Path

from rpdetect.cli import main

if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent  # the repository
    sys.exit(main(["evaluate", "--dataset", "imagenette", "--out", str(root / "benchmarks" / "results" / "imagenette"),
                   "--cache", str(root / "cache" / "eval"), *sys.argv[1:]]))
