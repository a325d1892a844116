"""Entry point of a measurement subprocess: ``python -m bench._child MODULE FUNC PARAMS``."""

from __future__ import annotations

import importlib
import json
import math
import sys

from bench._util import RESULT_MARK, NotAvailable


def main() -> None:
    module, func, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    target = getattr(importlib.import_module(f"bench.{module}"), func)
    try:
        result = target(params)
    except NotAvailable as exc:
        result = {"unavailable": str(exc)}
    clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}
    print(RESULT_MARK + json.dumps(clean, allow_nan=False), flush=True)


if __name__ == "__main__":
    main()
