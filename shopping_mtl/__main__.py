"""Command-line tools for the exports.

`python -m shopping_mtl check-export DIR`: verify exports the way TF Serving would load them.

DIR is an export base (`<base>/<model>/<version>/`), one model's folder, or one version. For the
newest version of each model (every version with --all-versions), in a fresh process that
imports only TensorFlow: load it, replay its warmup requests and compare the answers with the
training process's, scan the graph for ops stock TensorFlow lacks, check every output has an
explicit name; then run `saved_model_cli show --all` on it. Exit status 1 on any mismatch.

`python -m shopping_mtl rest-example VERSION_DIR`: the version's first warmup request as the
bodies of TF Serving's REST predict API, in the row (`instances`) and the columnar (`inputs`)
form, with the answers the model gives them (`predictions` and `outputs`), and the curl lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shopping_mtl.export.check import check, version_dirs

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shopping_mtl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    checker = commands.add_parser("check-export", help="verify exported SavedModels in a fresh process")
    checker.add_argument("dir", type=Path, help="export base, model folder or version folder")
    checker.add_argument("--all-versions", action="store_true", help="check every version, not only the newest")
    checker.add_argument("--timeout", type=int, default=600, help="seconds per model (default 600)")
    example = commands.add_parser("rest-example", help="REST request bodies and answers from a warmup request")
    example.add_argument("version", type=Path, help="a version folder, e.g. runs/RUN/export/ranker/1")
    example.add_argument("--columns", type=int, help="keep only the first N history events and candidates")
    args = parser.parse_args(argv)
    if args.command == "rest-example":
        # Only this command needs TensorFlow in this process (~3 s to import); check-export
        # loads each export in a fresh process of its own.
        from shopping_mtl.export.rest_example import rest_example

        return rest_example(args.version, args.columns)
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a folder", file=sys.stderr)
        return 2
    versions = version_dirs(args.dir, args.all_versions)
    if not versions:
        print(f"error: no SavedModel version under {args.dir}", file=sys.stderr)
        return 2
    failed = 0
    for version in versions:
        ok, text = check(version, args.timeout)
        failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {version}\n{text}")
    print(f"{len(versions) - failed} of {len(versions)} exports verified")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
