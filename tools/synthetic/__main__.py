"""Command line of the synthetic generator: `python -m tools.synthetic generate|fit ...`.

Run from the repository root (so that `tools` is importable); `--help` on each command lists
its flags. `generate` writes a log (see `generator.generate`); `fit` measures a profile from the
raw Alibaba EComm sample (see `fitting.fit_profile`). Nothing here assumes where the raw samples
live: `fit` takes their paths as arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tools.synthetic.fitting import fit_profile
from tools.synthetic.generator import generate
from tools.synthetic.profile import DEFAULT_PROFILE_PATH, load_profile, save_profile
from tools.synthetic.readers import read_ecomm_sample, read_taobao_sample


def _positive_int(text: str) -> int:
    """argparse type: an integer > 0, also written 1_000_000, 1,000,000 or 1e6."""
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
        if not number.is_integer():
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
        value = int(number)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `generate` and `fit` commands."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.synthetic",
        description=(
            "SYNTHETIC shopping event logs for scale tests. 'generate' writes a log of any size "
            "calibrated to a real sample's statistics (events per user, repeats, category "
            "affinity, popularity, behaviour shares, prices); 'fit' measures a new profile "
            "from the raw Alibaba EComm sample."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser(
        "generate",
        help="write a synthetic log (Parquet shards + items + spec.yaml + README)",
        description=(
            "Write exactly EVENTS synthetic events into OUT as events-00000.parquet, ... "
            "(CHUNK_EVENTS rows each), items.parquet, a README and spec.yaml, a dataset spec "
            "marked synthetic: true that the project reads like any other (train.py --dataset "
            "OUT/spec.yaml). Memory stays flat whatever EVENTS is; the same seed gives the same "
            "events. Progress goes to stderr."
        ),
    )
    gen.add_argument(
        "--events", type=_positive_int, required=True, help="number of events, e.g. 1000000 or 1e8"
    )
    gen.add_argument("--out", required=True, help="output folder; must not exist or be empty")
    gen.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    gen.add_argument(
        "--days", type=_positive_int, default=None,
        help="span of the timestamps in days (default: the profile's, 10)",
    )
    gen.add_argument(
        "--chunk-events", type=_positive_int, default=1_000_000,
        help="rows per Parquet shard (default 1000000)"
    )
    gen.add_argument(
        "--profile", default=None,
        help=f"profile YAML (default: tools/synthetic/{DEFAULT_PROFILE_PATH.name}, next to the "
        "generator's code)",
    )
    gen.add_argument("--quiet", action="store_true", help="no progress lines")

    fit = sub.add_parser(
        "fit",
        help="measure a profile from the raw Alibaba EComm sample",
        description=(
            "Read the raw EComm sample (ecomm_edge_train.txt.gz, ecomm_item_feature.txt.gz), "
            "measure its statistics, calibrate the generator by simulation (a few seconds) and "
            "write the profile YAML. Paths are taken as given (relative ones from the current "
            "folder); there is no default location of the raw samples."
        ),
    )
    fit.add_argument(
        "--ecomm-dir", required=True,
        help="folder of the raw EComm sample (holds ecomm_edge_train.txt.gz and "
        "ecomm_item_feature.txt.gz)",
    )
    fit.add_argument(
        "--hours-from", default=None,
        help="Taobao UserBehavior CSV(.gz) to take the hour-of-day curve from"
    )
    fit.add_argument("--out", required=True, help="profile YAML to write")
    fit.add_argument("--seed", type=_seed, default=0, help="seed of the calibration (default 0)")
    return parser


class _Progress:
    """Progress lines on stderr, at most one every `every` seconds plus the last one."""

    def __init__(self, every: float = 2.0) -> None:
        self.start = time.monotonic()
        self.last = 0.0
        self.every = every

    def __call__(self, written: int, total: int) -> None:
        now = time.monotonic()
        if written < total and now - self.last < self.every:
            return
        self.last = now
        rate = written / max(now - self.start, 1e-9)
        print(
            f"synthetic: {written:,} / {total:,} events ({100 * written / total:.0f}%), "
            f"{rate:,.0f} events/s",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Run one command.

    Args:
        argv: the arguments after the program name; None reads `sys.argv`.

    Returns:
        The exit status: 0 done, 2 bad arguments or a non-empty output folder, 1 another
        OS error (disk full, permissions).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.command}"
    try:
        if args.command == "generate":
            out = Path(args.out)
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise FileExistsError(
                    f"--out {out} exists and is not empty; give a new or empty folder"
                )
            profile = load_profile(args.profile) if args.profile else None
            command = "python -m tools.synthetic " + " ".join(
                sys.argv[1:] if argv is None else argv
            )
            spec = generate(
                out,
                args.events,
                profile=profile,
                seed=args.seed,
                n_days=args.days,
                chunk_events=args.chunk_events,
                progress=None if args.quiet else _Progress(),
                command=command,
            )
            print(spec)
        else:
            events, items = read_ecomm_sample(args.ecomm_dir)
            hour_events = read_taobao_sample(args.hours_from) if args.hours_from else None
            source = (
                f"Alibaba CIKM 2019 EComm sample ({Path(args.ecomm_dir).name}/"
                "ecomm_edge_train.txt.gz, ecomm_item_feature.txt.gz)"
            )
            if args.hours_from:
                source += f"; hour-of-day from {Path(args.hours_from).name}"
            profile = fit_profile(
                events, items, hour_events=hour_events, source=source, seed=args.seed
            )
            fit_args = " ".join(sys.argv[2:] if argv is None else argv[1:])
            header = (
                "Calibration profile for tools.synthetic (SYNTHETIC data generator).\n"
                f"Measured on {source}.\n"
                f"EComm training edges: {len(events):,} events; 1 = click, 2/3 = save, "
                "4 = purchase;\n"
                "the EComm sample has dates only, so hour_shares come from the Taobao file when\n"
                "--hours-from is given. 'generator' is calibrated by simulation so that synthetic\n"
                "logs of the sample's size reproduce its repeat share, category affinity,\n"
                "popularity slopes and distinct items. Produced by (from the repository root):\n"
                f"  python -m tools.synthetic fit {fit_args}"
            )
            print(save_profile(profile, args.out, header))
    except (ValueError, FileExistsError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permissions: not the arguments' fault
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
