"""Write the golden outputs of the embedded models (fixtures/golden/<model>.json), once.

Usage: ``python scripts/golden.py [MODEL ...]`` (default: every embedded model). Rewrite a file
only after checking why the outputs changed: tests/model/test_golden.py compares against it.
"""

from __future__ import annotations

import sys

from measure.model.embedded import EMBEDDED_MODELS
from measure.model.golden import write_golden
from measure.model.load import load_model


def main(names: list[str]) -> int:
    for name in names or list(EMBEDDED_MODELS):
        print(write_golden(load_model(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
