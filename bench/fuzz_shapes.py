"""The long run of the shortcut differential: request shapes and known response heads against
the parsers, on N random bases and variants each (tests/differential.py has the checks).

    python bench/fuzz_shapes.py [--cases 100000] [--seed 1]

Prints how many variants each shortcut took (and so how many were compared byte for byte
with the parser's reading) and exits non-zero on the first difference, with the bytes.
The socket-level differential runs longer with
`GATEWAY_PROPERTY_EXAMPLES=2000 pytest tests/test_shape_differential.py` (`make fuzz` runs both).
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.differential import (
    base_request,
    base_response,
    check_request,
    check_response,
    response_variant,
    variant,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="variants of each kind (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    for name, make, mutate, check in (
        ("request shapes", base_request, variant, check_request),
        ("response heads", base_response, response_variant, check_response),
    ):
        outcomes: collections.Counter[str] = collections.Counter()
        for case in range(args.cases):
            base = make(rng)
            mutated = mutate(rng, base)
            try:
                outcomes[check(base, mutated)] += 1
            except AssertionError as err:
                print(f"{name}: case {case} (seed {args.seed}) differs\n  base: {base!r}\n  {err}")
                return 1
        summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
        print(f"{name}: {args.cases} cases, no difference ({summary})")
    print(f"{time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
