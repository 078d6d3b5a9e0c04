"""The `resnetlab` command: argparse subcommands that only parse and call the library.

Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback), 1 failure at run time,
128 + signal number after SIGINT/SIGTERM once the checkpoint is saved.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from resnetlab import __version__
from resnetlab.errors import Interrupted, TrainingFailed, UserError

# `resnetlab train` flags and the dotted config keys they set (the rest goes through --set key=value).
TRAIN_FLAGS = {
    "model": "model.name",
    "data": "data.name",
    "data_dir": "data.root",
    "epochs": "train.epochs",
    "iters": "train.iters",
    "batch_size": "data.batch_size",
    "lr": "optim.lr",
    "seed": "train.seed",
    "device": "train.device",
    "weights": "model.weights",
    "out": "train.out_dir",
}

# `resnetlab sweep --launcher slurm` flags (dest names = resnetlab.experiments.slurm.SlurmOptions fields).
SLURM_FLAGS = ("partition", "gpus_per_run", "time_min", "account", "max_parallel")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> int:
    from resnetlab.models import list_models

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; 'resnetlab models' lists them all")
    print("\n".join(names))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from resnetlab.models import create_model
    from resnetlab.models.summary import summarize

    options = _parse_pairs(args.option, "--option")
    model = create_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans, **options)
    size = args.image_size or model.default_image_size
    result = summarize(model, (1, args.in_chans, size, size))
    print(result.text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from resnetlab.engine.config import format_config, list_recipes, load_config

    if args.list_recipes:
        for name, description in list_recipes():
            print(f"{name:<22} {description}")
        return 0
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None]
    if args.epochs is not None:
        overrides.append("train.iters=0")  # --epochs replaces a recipe's iteration budget
    if args.quiet:
        overrides.append("train.quiet=true")
    overrides += args.set
    config = load_config(args.recipe, overrides)
    if args.print_config:
        print(format_config(config))
        return 0
    if args.out is None:
        raise UserError("--out RUN_DIR is required (where the run's checkpoints, metrics and summary go)")

    from resnetlab.engine.trainer import train

    result = train(config, resume=args.resume)
    if result.is_main_process:
        summary = result.summary
        print(f"test accuracy: {100 * summary['test_acc']:.2f}% (best-validation model), "
              f"{100 * summary['test_acc_final']:.2f}% (final model)")
        print(f"run directory: {result.run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from resnetlab.engine.evaluate import evaluate_run
    from resnetlab.eval.metrics import format_metrics

    result = evaluate_run(args.path, split=args.split, tta=args.tta, data_dir=args.data_dir)
    print(format_metrics(result))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from resnetlab.engine.predict import predict_files

    results = predict_files(args.checkpoint, args.inputs, top_k=args.top_k)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for item in results:
            if "error" in item:
                print(f"{item['path']}: error: {item['error']}", file=sys.stderr)
                continue
            guesses = ", ".join(f"{p['class']} {100 * p['prob']:.1f}%" for p in item["predictions"])
            print(f"{item['path']}: {guesses}")
    return 0 if any("error" not in item for item in results) else 2


def cmd_report(args: argparse.Namespace) -> int:
    from resnetlab.eval.report import write_report

    print(write_report(args.run_dir))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from resnetlab.eval.plots import plot_runs

    print(plot_runs(args.run_dirs, args.out))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from resnetlab.engine.export import export_checkpoint

    print(export_checkpoint(args.checkpoint, args.format, args.out))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from resnetlab.experiments.sweep import aggregate, run_sweep

    if args.status:
        from resnetlab.experiments.slurm import format_status

        print(format_status(args.status))
        return 0
    if args.aggregate:
        table = aggregate(args.aggregate)
    else:
        if args.spec is None or args.out is None:
            raise UserError("usage: resnetlab sweep SPEC.yaml|NAME --out DIR [--jobs N | --launcher slurm ...], "
                            "or --aggregate DIR, or --status DIR")
        if args.launcher == "slurm":
            return _submit_sweep(args)
        given = [flag for flag in SLURM_FLAGS if getattr(args, flag) is not None]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} is for --launcher slurm")
        table = run_sweep(args.spec, args.out, jobs=args.jobs)
    print(Path(table).read_text(), end="")
    return 0


def _submit_sweep(args: argparse.Namespace) -> int:
    from resnetlab.experiments.slurm import SlurmOptions, submit_sweep

    if args.jobs != 1:
        raise UserError("--jobs is for --launcher local; with --launcher slurm use --max-parallel K")
    options = SlurmOptions(**{flag: getattr(args, flag) for flag in SLURM_FLAGS if getattr(args, flag) is not None})
    print(submit_sweep(args.spec, args.out, options).describe())
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from resnetlab.engine.config import load_config
    from resnetlab.experiments.lr_find import lr_find

    overrides = [f"{key}={getattr(args, flag)}" for flag, key in TRAIN_FLAGS.items()
                 if getattr(args, flag, None) is not None]
    config = load_config(args.recipe, overrides + args.set)
    result = lr_find(config, out=args.out_png, iters=args.iters_find, lr_min=args.lr_min, lr_max=args.lr_max)
    print(f"suggested lr: {result.suggested_lr:.3g}")
    print(f"plot: {result.plot}")
    return 0


# ------------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="resnetlab", description="Residual networks (He et al. 2016): build, train, evaluate.")
    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("models", help="list model names (one per line)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'plain*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-layer output shapes and parameters; totals: parameters and MACs")
    p.add_argument("model")
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--image-size", type=int, default=None, help="default: 32 for CIFAR nets, 224 otherwise")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. shortcut=B or stem=cifar (repeatable)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train a model (also under torchrun for several GPUs)")
    _add_train_flags(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--iters", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--weights", help="start from this state dict (ours or torchvision's)")
    p.add_argument("--out", metavar="RUN_DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR from checkpoints/last.pt with the run's own config.yaml")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--print-config", action="store_true", help="print every config key with its value and exit")
    p.add_argument("--list-recipes", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class table and confusion matrix of a run or checkpoint")
    p.add_argument("path", metavar="RUN_DIR|CKPT")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes for image files")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("report", help="write RUN_DIR/report.html")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("plot", help="training curves of one or more runs in one PNG")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("export", help="export a checkpoint to ONNX or torch.export (.pt2)")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--format", choices=["onnx", "pt2"], required=True)
    p.add_argument("--out", required=True, metavar="FILE")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sweep", help="grid x seeds of runs, ending in a mean ± std table and figures")
    p.add_argument("spec", nargs="?", metavar="SPEC.yaml|NAME")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--aggregate", metavar="DIR", help="rebuild the tables and figures from finished runs")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: this machine (--jobs N); slurm: every unfinished run one task of a Slurm job array "
                        "(needs pip install 'resnetlab[slurm]'); prints the job id and returns")
    p.add_argument("--partition", help="slurm: the partition (default: the cluster's default)")
    p.add_argument("--gpus-per-run", dest="gpus_per_run", type=int, metavar="G",
                   help="slurm: GPUs per run (default 1; 0 = CPU; G > 1 runs torchrun inside the job)")
    p.add_argument("--time", dest="time_min", type=int, metavar="MIN",
                   help="slurm: time limit per job in minutes (default: the partition's); a run stopped by it "
                        "saves last.pt and its job is requeued")
    p.add_argument("--account", help="slurm: the account to charge")
    p.add_argument("--max-parallel", dest="max_parallel", type=int, metavar="K",
                   help="slurm: at most K runs at once (default: no limit)")
    p.add_argument("--status", metavar="DIR", help="finished, running, pending and failed runs of a sweep (with "
                                                   "the log of each failure)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("lr-find", help="learning-rate range test: plot loss against lr, suggest an lr")
    _add_train_flags(p)
    p.add_argument("--iters", dest="iters_find", type=int, default=200)
    p.add_argument("--lr-min", type=float, default=1e-5)
    p.add_argument("--lr-max", type=float, default=10.0)
    p.add_argument("--out", dest="out_png", default="lr_find.png", metavar="FILE.png")
    p.set_defaults(func=cmd_lr_find)
    return parser


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="recipe name (see --list-recipes) or a YAML file")
    p.add_argument("--model")
    p.add_argument("--data", help="cifar10, cifar100, fashion-mnist, mnist or imagefolder:PATH")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key (repeatable)")


def _parse_pairs(pairs: Sequence[str], flag: str) -> dict[str, object]:
    import yaml

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    # Before torch (and its OpenMP runtime) loads: idle OpenMP threads sleep instead of spinning. On a CPU
    # shared with other jobs (sweeps with --jobs, other users), spinning threads steal the cores their peers
    # need: ResNet-20 training measured 26 images/s with 2 spinning threads against 157 with this setting on a
    # busy 2-core machine (bench notes, issue 8). An OMP_WAIT_POLICY set by the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(format="resnetlab: %(message)s", level=logging.INFO, stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as exc:
        print(f"resnetlab: error: {exc}", file=sys.stderr)
        return 2
    except TrainingFailed as exc:
        print(f"resnetlab: failed: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"resnetlab: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("resnetlab: interrupted", file=sys.stderr)
        return 130
