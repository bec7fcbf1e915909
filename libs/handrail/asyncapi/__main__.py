"""``python -m handrail.asyncapi [--check]``: write the AsyncAPI document, or fail if the checked-in one is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handrail.asyncapi import DOCUMENT_PATH, render, stale
from handrail.contracts import load_contracts
from handrail.tools import default_registry


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m handrail.asyncapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the checked-in document is stale")
    parser.add_argument("--config", type=Path, default=Path("config"), help="the contracts (default: config)")
    parser.add_argument("--out", type=Path, default=DOCUMENT_PATH)
    args = parser.parse_args()
    contracts = load_contracts(args.config, default_registry().names())
    if args.check:
        if stale(contracts, args.out):
            print(f"{args.out} is stale; run `make schemas`", file=sys.stderr)
            raise SystemExit(1)
        print(f"{args.out} is current")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(contracts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
