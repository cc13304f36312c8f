"""Paper Table 1 on dogscats: `python benchmarks/paper_dogscats.py [--n 100] [--attacks ...] [--quick]`.

The same code as `rpdetect evaluate --dataset dogscats` (rpdetect.evaluation.pipeline); results go
to benchmarks/results/dogscats/, intermediates to cache/eval/dogscats/ (a killed run resumes).
"""

import sys

from rpdetect.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", "--dataset", "dogscats", *sys.argv[1:]]))
