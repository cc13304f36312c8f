"""Paper Table 1 on cifar10: `python benchmarks/paper_cifar10.py [--n 100] [--attacks ...] [--quick]`.

The same code as `rpdetect evaluate --dataset cifar10` (rpdetect.evaluation.pipeline); results go
to benchmarks/results/cifar10/, intermediates to cache/eval/cifar10/ (a killed run resumes).
"""

import sys

from rpdetect.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", "--dataset", "cifar10", *sys.argv[1:]]))
