"""The `resnetlab` command: argparse subcommands that only parse and call the library.

Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback), 1 failure at run time,
128 + signal number after SIGINT/SIGTERM once the checkpoint is saved, 141 (128 + SIGPIPE) without a word when
the reader of stdout went away (`resnetlab summary resnet20 | head`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from resnetlab.engine.config import DEFAULT_RECIPE
from resnetlab.engine.rundir import BEST, CHECKPOINTS, LAST
from resnetlab.errors import Interrupted, TrainingFailed, UserError
from resnetlab.version import __version__

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE (13): what a shell reports for `yes | head`

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
    from resnetlab.models.catalog import model_names  # the name tables only: no torch (~2 s) for a list

    names = model_names(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; 'resnetlab models' lists them all")
    print("\n".join(names))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from resnetlab.models import create_model
    from resnetlab.models.summary import summarize

    options = _parse_pairs(args.option, "--option")
    model = create_model(args.model, num_classes=args.num_classes, in_chans=args.in_chans, **options)
    size = args.image_size if args.image_size is not None else model.default_image_size
    result = summarize(model, (1, args.in_chans, size, size))
    print(result.text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from resnetlab.engine.config import format_config
    from resnetlab.engine.recipes import list_recipes
    from resnetlab.engine.resume import command_config

    if args.list_recipes:
        for name, description in list_recipes():
            print(f"{name:<22} {description}")
        return 0
    overrides = _train_overrides(args)
    resume = args.resume or args.resume_from is not None
    config = command_config(args.recipe, overrides, args.out, resume)  # resuming: the run's own config
    if args.print_config:
        print(format_config(config))
        return 0
    if args.out is None:
        raise UserError("--out RUN_DIR is required (where the run's checkpoints, metrics and summary go)")
    from resnetlab.engine.preflight import check_start

    check_start(config, resume=resume)  # names, paths and sizes: refused before torch is imported
    from resnetlab.engine.builders import check_user_options
    from resnetlab.engine.config import override_key
    from resnetlab.engine.trainer import train

    if not resume:
        check_user_options(config.model, [override_key(item) for item in args.set])

    result = train(config, resume=resume, resume_from=args.resume_from, fallback=args.fallback)
    if result.is_main_process:
        if config.train.quiet:
            print(f"test accuracy: {100 * result.summary['test_acc']:.2f}%")
        print(f"run directory: {result.run_dir}")
    return 0


def _train_overrides(args: argparse.Namespace) -> list[str]:
    """The dotted overrides the flags of `train` (and `lr-find`) stand for, then --set ones."""
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in TRAIN_FLAGS.items()
                 if getattr(args, flag, None) is not None]
    if getattr(args, "epochs", None) is not None:
        overrides.append("train.iters=0")  # --epochs replaces a recipe's iteration budget
    if getattr(args, "quiet", False):
        overrides.append("train.quiet=true")
    return overrides + args.set


def cmd_evaluate(args: argparse.Namespace) -> int:
    from resnetlab.engine.metrics import format_metrics
    from resnetlab.reports.evaluation import evaluate_run

    result = evaluate_run(args.path, split=args.split, tta=args.tta, data=args.data, data_dir=args.data_dir,
                          device=args.device, batch_size=args.batch_size)
    print(format_metrics(result))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from resnetlab.inference.predict import predict

    results = predict(args.checkpoint, args.inputs, top_k=args.top_k)
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


def cmd_explain(args: argparse.Namespace) -> int:
    from resnetlab.reports.explain import explain

    results = explain(args.checkpoint, args.inputs, args.out, target_class=args.target_class, device=args.device)
    for item in results:
        if "error" in item:
            print(f"{item['path']}: error: {item['error']}", file=sys.stderr)
            continue
        extra = f", {item['class']} {100 * item['class_prob']:.1f}%" if "class" in item else ""
        print(f"{item['path']}: {item['predicted']} {100 * item['prob']:.1f}%{extra} -> {item['out']}")
    return 0 if any("error" not in item for item in results) else 2


def cmd_report(args: argparse.Namespace) -> int:
    from resnetlab.reports.report import write_report

    print(write_report(args.run_dir))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from resnetlab.reports.gradflow import plot_runs_and_grad_flow

    for path in plot_runs_and_grad_flow(args.run_dirs, args.out):  # + OUT_gradflow.png with train.grad_norms
        print(path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from resnetlab.reports.compare import runs_table

    labels = args.labels.split(",") if args.labels else None
    print(runs_table(args.run_dirs, labels))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from resnetlab.inference.export import export_checkpoint

    print(export_checkpoint(args.checkpoint, args.format, args.out, include_preprocessing=args.include_preprocessing,
                            force=args.force))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from resnetlab.reports.sweep_run import run_sweep
    from resnetlab.reports.sweep_tables import aggregate

    if args.status:
        from resnetlab.experiments.slurm import format_status

        print(format_status(args.status))
        return 0
    if args.aggregate:
        table = aggregate(args.aggregate)
    else:
        if args.spec is None or args.out is None:
            raise UserError("usage: resnetlab sweep SPEC.yaml|NAME --out DIR [--set KEY=VALUE ...] [--jobs N | "
                            "--launcher slurm ...], or --aggregate DIR, or --status DIR")
        if args.set:
            from resnetlab.experiments.spec import with_overrides

            args.spec = with_overrides(args.spec, args.set)
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

    config = load_config(args.recipe, _train_overrides(args))
    from resnetlab.engine.preflight import check_start

    check_start(config)
    from resnetlab.experiments.lr_find import lr_find

    result = lr_find(config, out=args.out_png, iters=args.iters_find, lr_min=args.lr_min, lr_max=args.lr_max)
    print(f"suggested lr: {result.suggested_lr:.3g} ({result.rule}); the loss was lowest at lr "
          f"{result.minimum_lr:.3g}")
    print("with schedule.name=onecycle, use the suggestion as optim.lr (the peak of the cycle); stay below the "
          "lr of the lowest loss")
    print(f"plot: {result.plot}")
    return 0


# ------------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="resnetlab", description="Residual networks (He et al. 2016): build, train, evaluate.")
    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    _model_commands(sub)
    _training_commands(sub)
    _result_commands(sub)
    _sweep_command(sub)
    return parser


def _model_commands(sub: argparse._SubParsersAction) -> None:
    """The subcommands for models and their summaries."""
    p = sub.add_parser("models", help="list model names (one per line)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'plain*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-layer output shapes and parameters; totals: parameters and MACs")
    p.add_argument("model")
    p.add_argument("--in-chans", type=_positive_int, default=3, help="channels of the input images (default: 3)")
    p.add_argument("--image-size", type=_positive_int, default=None, help="default: 32 for CIFAR nets, 224 otherwise")
    p.add_argument("--num-classes", type=_positive_int, default=None,
                   help="default: the model's own, 10 for CIFAR nets, 1000 for the ImageNet ResNets")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. shortcut=B or stem=cifar (repeatable)")
    p.set_defaults(func=cmd_summary)


def _training_commands(sub: argparse._SubParsersAction) -> None:
    """The subcommands for training and the learning-rate range test."""
    p = sub.add_parser("train", help="train a model (also under torchrun for several GPUs)",
                       description="Train a model. A recipe gives every setting; flags and --set override it.")
    _add_train_flags(p)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=_positive_int, help="passes over the training split (train.epochs; "
                        "replaces the recipe's iteration budget)")
    budget.add_argument("--iters", type=_positive_int, help="optimizer steps (train.iters)")
    p.add_argument("--batch-size", type=int, help="images per optimizer step, over all processes (data.batch_size)")
    p.add_argument("--lr", type=float, help="peak learning rate (optim.lr)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="train.device (auto: cuda, mps, cpu)")
    p.add_argument("--weights", help="start from these weights: a state dict or checkpoint file (ours or "
                   "torchvision's), or a torchvision weight name such as IMAGENET1K_V1 (model.weights)")
    p.add_argument("--out", metavar="RUN_DIR", help="the run directory (train.out_dir); must be new or empty")
    p.add_argument("--resume", action="store_true",
                   help=f"continue RUN_DIR from {CHECKPOINTS}/{LAST} with the run's own config.yaml (a run that "
                   "stopped before its first checkpoint starts over)")
    p.add_argument("--resume-from", metavar="CKPT", help="continue RUN_DIR from this checkpoint instead of "
                   f"{LAST} (e.g. RUN_DIR/{CHECKPOINTS}/{BEST})")
    p.add_argument("--fallback", action="store_true", help=f"with --resume: when {LAST} fails its integrity check, "
                   "continue from the run's newest checkpoint that passes it (named in a warning)")
    p.add_argument("--quiet", action="store_true", help="print only the final result, warnings and errors (the "
                   "files are still written)")
    p.add_argument("--print-config", action="store_true", help="print every config key with its value and exit")
    p.add_argument("--list-recipes", action="store_true", help="list the shipped recipes and exit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="learning-rate range test: plot loss against lr, suggest an lr")
    _add_train_flags(p)
    p.add_argument("--batch-size", type=int, help="images per step (data.batch_size)")
    p.add_argument("--iters", dest="iters_find", type=int, default=200, help="steps of the test (default: 200)")
    p.add_argument("--lr-min", type=float, default=1e-5, help="the first lr (default: 1e-5)")
    p.add_argument("--lr-max", type=float, default=10.0, help="the last lr (default: 10)")
    p.add_argument("--out", dest="out_png", default="lr_find.png", metavar="FILE.png",
                   help="the plot of loss against lr (default: lr_find.png)")
    p.set_defaults(func=cmd_lr_find)


def _result_commands(sub: argparse._SubParsersAction) -> None:
    """The subcommands for what a trained model gives: numbers, predictions, explanations, reports, exports."""
    p = sub.add_parser("evaluate", help="accuracy, per-class table and confusion matrix of a run or checkpoint")
    p.add_argument("path", metavar="RUN_DIR|CKPT", help=f"a run directory (its {BEST}) or a checkpoint file")
    p.add_argument("--split", choices=["test", "val", "train"], default="test",
                   help="the official test split, the run's own validation split, or the images it trained on "
                        "(a full pass in eval mode; default: test)")
    p.add_argument("--tta", nargs="?", const="flip", choices=["flip", "shift"], default=False,
                   help="test-time augmentation: flip (the default of a bare --tta) averages with the mirrored image; "
                   "shift also with both moved by one pixel (files are named *_tta, *_tta-shift)")
    p.add_argument("--data", help="another labelled data set with the same classes, e.g. imagefolder:PATH")
    p.add_argument("--data-dir", help="the folder that holds the data set, if not where the run found it")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="(default: auto)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the run's eval.batch_size)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes for image files")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=3, help="classes per image, most probable first (default: 3)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("explain", help="Grad-CAM: where in each image the model found its predicted (or a given) "
                       "class (needs pip install 'resnetlab[explain]')")
    p.add_argument("checkpoint", metavar="CKPT", help=f"a checkpoint file or a run directory (its {BEST})")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of them")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for DIR/<image>_gradcam.png (the image, "
                   "the map over it, the predicted class and its probability)")
    p.add_argument("--class", dest="target_class", metavar="NAME",
                   help="also show the map of this class (a class name of the checkpoint, or its index)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="(default: auto)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("report", help="write RUN_DIR/report.html")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("plot", help="training curves of one or more runs in one PNG (and their gradient flow "
                                    "beside it, FILE_gradflow.png, when they logged train.grad_norms)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE.png",
                   help="the image to write (a folder gets curves.png inside; no suffix: .png is added)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("compare", help="finished runs side by side: time, speed, validation and test accuracy "
                       "(a Markdown table)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--labels", metavar="A,B,...", help="the first column, one label per run (default: the folder "
                   "names)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="export a checkpoint to ONNX or torch.export (.pt2)")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--format", choices=["onnx", "pt2"], required=True,
                   help="onnx (onnxruntime, browsers, TensorRT) or pt2 (torch.export)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write; FILE.json beside it says how "
                   "to feed it")
    p.add_argument("--include-preprocessing", action="store_true",
                   help="the graph takes uint8 NCHW images at the run's stored size and returns probabilities "
                   "(/255, normalization and the run's resize inside it); default: normalized floats in, logits out")
    p.add_argument("--force", action="store_true", help="replace FILE (and FILE.json) if they exist")
    p.set_defaults(func=cmd_export)


def _sweep_command(sub: argparse._SubParsersAction) -> None:
    """The subcommands for sweeps, local or on a Slurm cluster."""
    p = sub.add_parser("sweep", help="grid x seeds of runs, ending in a mean ± std table and figures")
    p.add_argument("spec", nargs="?", metavar="SPEC.yaml|NAME")
    p.add_argument("--out", metavar="DIR", help="the sweep directory (runs/, results.md, figures)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once on this machine (default: 1, in this "
                   "process; more run as subprocesses)")
    p.add_argument("--aggregate", metavar="DIR", help="rebuild the tables and figures from finished runs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config key for every run, added to the spec's set: (repeatable), e.g. train.epochs=2")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: this machine (--jobs N); slurm: every unfinished run one task of a Slurm job array "
                        "(needs pip install 'resnetlab[slurm]'); prints the job id and returns")
    p.add_argument("--partition", help="slurm: the partition (default: the cluster's default)")
    p.add_argument("--gpus-per-run", dest="gpus_per_run", type=int, metavar="G",
                   help="slurm: GPUs per run (default 1; 0 = CPU; G > 1 runs torchrun inside the job)")
    p.add_argument("--time", dest="time_min", type=int, metavar="MIN",
                   help="slurm: time limit per job in minutes (default: the partition's); a run stopped by it "
                        f"saves {LAST} and its job is requeued")
    p.add_argument("--account", help="slurm: the account to charge")
    p.add_argument("--max-parallel", dest="max_parallel", type=int, metavar="K",
                   help="slurm: at most K runs at once (default: no limit)")
    p.add_argument("--status", metavar="DIR", help="finished, running, pending and failed runs of a sweep (with "
                                                   "the log of each failure)")
    p.set_defaults(func=cmd_sweep)

def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help=f"recipe name (see train --list-recipes) or a YAML file (default: "
                   f"{DEFAULT_RECIPE}; cifar10-fast with --data cifar10 or cifar100)")
    p.add_argument("--model", help="a name from 'resnetlab models' (model.name)")
    p.add_argument("--data", help="cifar10, cifar100, fashion-mnist, mnist or imagefolder:PATH (data.name)")
    p.add_argument("--data-dir", help="the folder that holds the data set (data.root; default $RESNETLAB_DATA or "
                   "~/.cache/resnetlab/data)")
    p.add_argument("--seed", type=int, help="seed of the initialisation, split, order and augmentation (train.seed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. optim.weight_decay=1e-4 (repeatable; see --print-config)")


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (sizes and counts; 0 would silently mean "default" or fail deep inside)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parse_pairs(pairs: Sequence[str], flag: str) -> dict[str, object]:
    import yaml

    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, but an unrecognized argument is reported by its subcommand's parser, whose hint names
    'resnetlab SUBCOMMAND --help' (argparse leaves it to the top parser: 'resnetlab --help')."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is left cannot fail again.

    The recipe of the Python docs ("Note on SIGPIPE", signal module): Python ignores SIGPIPE, so a write to a
    closed pipe raises BrokenPipeError instead of ending the process quietly as `cat` or `ls` would end.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in tests); nothing is left to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    logging.basicConfig(format="resnetlab: %(message)s", level=logging.INFO, stream=sys.stderr)
    previous = _stop_on_sigterm()
    try:
        args = _parse(build_parser(), argv)
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here rather than in the interpreter's final flush
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
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
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted(signum, f"interrupted by signal {signum}; nothing was saved: run the same command again")


def _stop_on_sigterm() -> object:
    """SIGTERM before a command installs its own handler (while torch loads) ends it with one line and 143, as
    Ctrl-C does with 130; returns the handler to put back (None off the main thread, where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)
