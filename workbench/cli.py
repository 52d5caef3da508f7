"""``workbench`` command line: headless runs for papers and CI.

    workbench --version
    workbench demo --out DIR [--quick] [--store DIR]
    workbench findings [--store DIR] [--format table|csv|json]
    workbench study ID --out DIR [--quick | --full | --smoke] [--store DIR]
    workbench runs list [--store DIR] [--format table|csv|json]
    workbench runs check [--store DIR]      verify every checksum of every run (exit 1 when something is wrong)
    workbench runs repair [--store DIR]     fix what check finds, as far as it can be fixed without retraining
    workbench measures [--family NAME] [--format table|csv|json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .version import __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="flagship demo: label noise in pretraining, seen layer by layer")
    demo.add_argument("--out", required=True, type=Path, help="directory for the report, figures and tables")
    demo.add_argument("--quick", action="store_true", help="small CPU-sized version (< 2 minutes on 2 cores)")
    demo.add_argument("--store", type=Path, default=None,
                      help="run store directory (default: $WORKBENCH_HOME or ~/.workbench)")
    demo.add_argument("--no-static", action="store_true", help="skip SVG/PDF/PNG export (HTML + CSV only)")

    fnd = sub.add_parser("findings", help="the published findings: claim, verdict and numbers of the latest run "
                                          "(trains nothing)")
    fnd.add_argument("--store", type=Path, default=None, help="run store whose verdicts to show (your own runs)")
    fnd.add_argument("--format", choices=["table", "csv", "json"], default="table")

    study = sub.add_parser("study", help="run a finding's experiment (S1, S3, S4, S12): report, figures, verdict")
    study.add_argument("finding", help="finding id or name, e.g. S1 or label_noise (`workbench findings` lists them)")
    study.add_argument("--out", required=True, type=Path, help="directory for the report, tables, figures, verdict")
    size = study.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="2-core CPU size, >= 3 seeds, a few minutes (default)")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="the GPU-sized experiment")
    size.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help="seconds-sized run that exercises the pipeline (2 seeds: its verdict is not evidence)")
    study.set_defaults(mode="quick")
    study.add_argument("--store", type=Path, default=None, help="run store directory")
    study.add_argument("--no-static", action="store_true", help="skip SVG/PDF/PNG export")

    runs = sub.add_parser("runs", help="inspect the run store")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    lst = runs_sub.add_parser("list", help="one line per run")
    lst.add_argument("--store", type=Path, default=None, help="run store directory")
    lst.add_argument("--format", choices=["table", "csv", "json"], default="table")
    chk = runs_sub.add_parser("check", help="verify every stored file of every run (exit 1 and one line per problem)")
    chk.add_argument("--store", type=Path, default=None, help="run store directory")
    rep = runs_sub.add_parser("repair", help="remove temporary files and leftovers, move corrupt checkpoints and runs "
                                             "aside, rebuild histories and manifests, mark dead runs interrupted")
    rep.add_argument("--store", type=Path, default=None, help="run store directory")
    meas = sub.add_parser("measures", help="the registered measures: what each takes and returns, its reference")
    meas.add_argument("--family", default=None, help="only this family (spectrum, similarity, probe, …)")
    meas.add_argument("--format", choices=["table", "csv", "json"], default="table")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.out, quick=args.quick, store=args.store, static=not args.no_static)
        return 0
    if args.command == "findings":
        from .findings import findings_table

        df = findings_table(args.store)
        if args.format == "csv":
            sys.stdout.write(df.to_csv(index=False))
        elif args.format == "json":
            sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
        else:
            for r in df.itertuples():
                print(f"{r.id:<4} {r.name:<21} {r.claim}")
                if r.origin:
                    where = "your run" if r.origin == "yours" else "recorded in the repository"
                    print(f"     -> {r.verdict.upper()} ({r.mode}, seeds {r.seeds}, {where}, {r.date}, {r.machine}, "
                          f"{r.wall_s:.0f} s): {r.numbers}")
                else:
                    print(f"     -> {r.verdict}")
        return 0
    if args.command == "study":
        from .findings import get

        try:
            finding = get(args.finding)
        except ValueError as err:
            parser.error(str(err))
        result = finding.run(args.mode, out=args.out, store=args.store, static=not args.no_static)
        print(result.verdict)
        print(f"report: {args.out / 'report.html'}")
        return 0
    if args.command == "runs":
        if args.runs_command not in ("list", "check", "repair"):
            parser.parse_args(["runs", "--help"])
            return 2
        from .runs import RunStore

        store = RunStore(args.store)
        if args.runs_command == "check":
            problems = store.check()
            for r in problems.itertuples():
                print(f"{r.path}: {r.problem}")
            if problems.empty:
                print(f"ok: {len(store.ids())} runs in {store.root}, every stored file matches its checksum")
            return 1 if len(problems) else 0
        if args.runs_command == "repair":
            actions = store.repair()
            for r in actions.itertuples():
                print(f"{r.path}: {r.action}")
            print(f"{len(actions)} repairs in {store.root}" if len(actions) else f"nothing to repair in {store.root}")
            return 0
        df = store.list()
        if args.format == "csv":
            sys.stdout.write(df.to_csv(index=False))
        elif args.format == "json":
            sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
        elif df.empty:
            print(f"no runs in {store.root}")
        else:
            cols = ["id", "name", "state", "step", "n_checkpoints", "dataset", "model", "objective",
                    "label_noise", "seed", "steps"]
            print(df[cols].to_string(index=False))
        return 0
    if args.command == "measures":
        from .measures import measures_table

        df = measures_table()
        if args.family is not None:
            if args.family not in set(df["family"]):
                parser.error(f"--family {args.family!r} is not one of {sorted(set(df['family']))}")
            df = df[df["family"] == args.family]
        if args.format == "csv":
            sys.stdout.write(df.to_csv(index=False))
        elif args.format == "json":
            sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
        else:
            print(df.drop(columns="function").to_string(index=False, max_colwidth=70))
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
