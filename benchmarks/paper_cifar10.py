"""Paper Table 1 on cifar10: `python benchmarks/paper_cifar10.py [--n 100] [--attacks ...] [--quick]`.

The same code as `rpdetect evaluate --dataset cifar10` (rpdetect.evaluation.pipeline); results go
to benchmarks/results/cifar10/, intermediates to cache/eval/cifar10/full/ (a killed run resumes).
"""

import sys
from pathlib import Path

from rpdetect.cli import main

if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent  # the repository
    sys.exit(main(["evaluate", "--dataset", "cifar10", "--out", str(root / "benchmarks" / "results" / "cifar10"),
                   "--cache", str(root / "cache" / "eval"), *sys.argv[1:]]))
