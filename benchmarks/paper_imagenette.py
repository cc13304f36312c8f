"""Paper Table 1 on imagenette: `python benchmarks/paper_imagenette.py [--n 100] [--attacks ...] [--quick]`.

The same code as `rpdetect evaluate --dataset imagenette` (rpdetect.evaluation.pipeline); results go
to benchmarks/results/imagenette/, intermediates to cache/eval/imagenette/ (a killed run resumes).
"""

import sys

from rpdetect.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", "--dataset", "imagenette", *sys.argv[1:]]))
