"""``workbench`` command line: headless runs for papers and CI.

    workbench --version
    workbench demo --out DIR [--quick] [--store DIR]
    workbench findings [--store DIR] [--format table|csv|json]
    workbench study ID --out DIR [--quick | --full | --smoke] [--store DIR]
    workbench runs list [--store DIR] [--format table|csv|json]
    workbench runs check [--store DIR]      verify every checksum of every run (exit 1 when something is wrong)
    workbench runs repair [--store DIR]     fix what check finds, as far as it can be fixed without retraining
    workbench measures [--family NAME] [--format table|csv|json]
    workbench sweep KEY=VALUE... [--base FILE | --study ID [--mode M]] [--executor E] [--dry-run] [--out FILE.csv]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
    _sweep_parser(sub)
    return p


def _sweep_parser(sub: Any) -> None:
    from .executors import EXECUTORS  # names only: the engines are imported when an executor is made

    sw = sub.add_parser(
        "sweep", help="train a grid of runs from Hydra-style overrides, e.g. label_noise=0,0.1 seed=0,1,2",
        description="Train (or reuse) a grid of runs: each KEY=VALUE fixes a RunConfig field, KEY=A,B,C or "
                    "KEY=range(0,3) sweeps it, seed=0,1,2 sets the seeds, model_options.width=16,32 sets one entry "
                    "of a dict field; lists [1,2], dicts {width:16}, null, true/false and quoted strings as in "
                    "Hydra (see workbench.sweep).",
        epilog="example: workbench sweep dataset=gaussian-mixture model=mlp steps=50 label_noise=0,0.1,0.3 "
               "seed=0,1 --dry-run")
    sw.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the base config")
    source = sw.add_mutually_exclusive_group()
    source.add_argument("--base", type=Path, default=None, metavar="FILE",
                        help="JSON or YAML file of RunConfig fields (default: RunConfig())")
    source.add_argument("--study", default=None, metavar="FINDING",
                        help="start from a finding's grid, seeds and study settings (S1, label_noise, ...; "
                             "`workbench findings` lists them); the overrides change it")
    sw.add_argument("--mode", choices=["smoke", "quick", "full"], default="quick",
                    help="the size of --study's experiment (default quick)")
    sw.add_argument("--executor", choices=list(EXECUTORS), default="inprocess",
                    help="where the runs train (default inprocess: one after another in this process)")
    sw.add_argument("--executor-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the executor, repeatable (e.g. workers=2, num_gpus=0.5, folder=DIR)")
    sw.add_argument("--downstream", default=None, metavar="M1,M2",
                    help="downstream evaluation methods, comma-separated (linear, knn, finetune, ...; default none)")
    sw.add_argument("--measures", default=None, metavar="M1,M2",
                    help="registered measures, comma-separated (rankme, effective_rank, ...; default none)")
    sw.add_argument("--name", default=None,
                    help="study name; runs are stored as NAME/LABEL (default: sweep, or the finding's study name)")
    sw.add_argument("--store", type=Path, default=None, help="run store directory")
    sw.add_argument("--out", type=Path, default=None, metavar="FILE.csv", help="write the study table here")
    sw.add_argument("--dry-run", action="store_true",
                    help="print one line per run (label, id, new/exists/done, overrides) and train nothing")


def _names(text: str | None, arg: str) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if text.strip() and not names:
        raise ValueError(f"{arg} {text!r} names nothing; give comma-separated names, e.g. {arg} linear,knn")
    return names


def _executor_options(items: list[str]) -> dict[str, Any]:
    from .sweep import parse_value

    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"--executor-option {item!r}: write KEY=VALUE, e.g. --executor-option workers=2")
        out[key.strip()] = parse_value(value, what=f"--executor-option {item!r}")
    return out


def _sweep(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .sweep import build_sweep, dry_run, format_dry_run, load_base, summary

    try:
        options: dict[str, Any] = {}
        for key, arg in (("downstream", "--downstream"), ("measures", "--measures")):
            names = _names(getattr(args, key), arg)
            if names is not None:
                options[key] = names
        executor_options = _executor_options(args.executor_option)
        if args.study is not None:
            from .findings import get

            finding = get(args.study)
            setting = finding.settings[args.mode]
            sweep = build_sweep(args.overrides, base=finding.base.replace(**setting.config), vary=finding.vary,
                                seeds=setting.seeds, study_options={**finding.study, **setting.study})
            name = args.name or f"{finding.id.lower()}-{args.mode}"
        else:
            if args.mode != "quick":
                raise ValueError("--mode sizes a finding's experiment; give --study ID with it")
            base = load_base(args.base) if args.base is not None else None
            sweep = build_sweep(args.overrides, base=base, study_options={"downstream": [], "measures": []})
            name = args.name or "sweep"
        if args.dry_run:
            executor = None
        else:
            from .executors import make_executor

            executor = make_executor(args.executor, **executor_options)
        study = sweep.study(store=args.store, name=name, executor=executor, **options)
    except (ValueError, TypeError, ImportError) as err:
        parser.error(str(err))
    plan = dry_run(study, sweep)
    if args.dry_run:
        print(format_dry_run(plan))
        return 0
    counts = plan["status"].value_counts()
    print(f"sweep {name!r}: {len(plan)} runs ({counts.get('new', 0)} new, {counts.get('exists', 0)} to resume, "
          f"{counts.get('done', 0)} done) in {study.store.root}, executor {args.executor}")
    try:
        table = study.run()
    except RuntimeError as err:  # every run failed
        print(f"sweep {name!r}: {err}", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    print(summary(study, table))
    if args.out is not None:
        print(f"table: {args.out}")
    return 1 if study.failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "sweep" and not any(e.startswith("-") for e in extra):
        args.overrides += extra  # overrides given after an option: `sweep --dry-run a=1 --store S b=2`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
    if args.command == "sweep":
        return _sweep(args, parser)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
