"""The ``selfmedmae`` command: ``selfmedmae COMMAND CONFIG [key=value ...]``.

Each command is a thin wrapper; the work lives in the stage modules, imported lazily so that
``selfmedmae --help`` stays fast. Bad input (a :class:`~selfmedmae.errors.UserError`) is printed as one
line naming the file or key, with exit code 2 and no traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from selfmedmae.errors import Stopped, UserError

CONVERT_SOURCES = ("official-mae3d", "official-unetr3d", "mae2d", "vit2d")
OUTPUT_FORMATS = ("nifti", "dicom-seg")  # what predict writes label maps as


def _pretrain(args: argparse.Namespace) -> int:
    from selfmedmae.config import load_config
    from selfmedmae.train import pretrain

    return pretrain.run(load_config(args.config, args.overrides))


def _finetune(args: argparse.Namespace) -> int:
    from selfmedmae.config import load_config
    from selfmedmae.train import finetune

    return finetune.run(load_config(args.config, args.overrides))




def _check_data(args: argparse.Namespace) -> int:
    from selfmedmae.preflight import check_data_command

    return check_data_command(args.config, args.overrides)


def _convert(args: argparse.Namespace) -> int:
    from selfmedmae.models.convert import convert_file

    out = convert_file(args.src, args.dst, args.source_format, args.overrides)
    print(f"wrote {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from selfmedmae.eval.evaluate import run

    return run(args.checkpoint, args.overrides, out=args.out, figures=args.figures, overwrite=args.overwrite)


def _predict(args: argparse.Namespace) -> int:
    from selfmedmae.eval.predict import run

    return run(args.checkpoint, args.inputs, args.out, probs=args.probabilities, figures=args.figures,
               overrides=args.overrides, overwrite=args.overwrite, output_format=args.format)


def _export(args: argparse.Namespace) -> int:
    from selfmedmae.export.command import run

    return run(args.checkpoint, args.out, onnx=args.onnx)


def _report(args: argparse.Namespace) -> int:
    from selfmedmae.eval.report import run

    return run(args.runs, out=args.out, split=args.split)


def _curve(args: argparse.Namespace) -> int:
    from selfmedmae.experiments.curve import parse_fractions, run

    return run(args.config, args.overrides, fractions=parse_fractions(args.fractions), seeds=args.seeds,
               pretrain=args.pretrain, pretrain_overrides=args.pretrain_set, out=args.out, budget=args.budget,
               scratch_config=args.scratch_config)


def _pretrain_curve(args: argparse.Namespace) -> int:
    from selfmedmae.experiments.pretrain_curve import parse_epochs, run

    return run(args.config, args.overrides, pretrain=args.pretrain, epochs=parse_epochs(args.epochs),
               seeds=args.seeds, pretrain_overrides=args.pretrain_set, scratch_config=args.scratch_config,
               out=args.out)


def _tune(args: argparse.Namespace) -> int:
    from selfmedmae.experiments.tune import run

    return run(args.config, args.overrides, grid=args.grid, inits=args.init, seeds=args.seeds, out=args.out)


def _show_config(args: argparse.Namespace) -> int:
    from selfmedmae.config.sources import run

    return run(args.config, args.overrides, only_set=args.only_set)


def _init_config(args: argparse.Namespace) -> int:
    from selfmedmae.data.starter import run

    return run(args.kind, args.data, args.out)


# The keys a user sets most often, shown by --help of every config command (all: docs/config-reference.md).
CONFIG_EPILOG = """main config keys (every key, its default and the paper's value: docs/config-reference.md;
`selfmedmae config CONFIG` prints the resolved config with the source of each value):
  data.root=PATH          dataset folder (data files inside it are relative to it)
  data.format=NAME        msd | btcv | brats | csv | cxr14 (docs/own-data-3d.md, docs/own-data-2d.md)
  run.dir=PATH            run folder (config, splits, metrics, TensorBoard, checkpoints, figures)
  run.resume=true         continue from <run.dir>/checkpoints/last.pt
  run.device=cpu|cuda     run.precision=auto|bf16|fp16|fp32
  train.epochs=N          train.batch_size=N  train.lr=X (absolute)  train.base_lr=X (x batch/256)
  train.accum_iter=N      train.log_every=N (steps between log lines)  train.eval_every=N (epochs)
  model.preset=vit_base   model.patch_size=16  model.mask_ratio=0.75
  init=mae:PATH           fine-tuning start: scratch | mae:PATH | official:PATH | imagenet:PATH
"""


# What check-data reads: the data section, and the stage whose data rules apply.
CHECK_DATA_EPILOG = """keys check-data reads (every key: docs/config-reference.md; `selfmedmae config CONFIG` prints them
with the source of each value):
  stage=pretrain|finetune  whose data rules apply (pre-training needs no labels)
  data.root=PATH          dataset folder (data files inside it are relative to it)
  data.format=NAME        msd | btcv | brats | csv | cxr14 (docs/own-data-3d.md, docs/own-data-2d.md)
  data.spatial_dims=2|3   data.in_chans=N  data.labels=[...]
  data.csv=FILE           data.dataset_json=FILE  data.split_file=FILE  data.extra_unlabelled=PATH
  data.image_column=NAME  data.label_column=NAME  data.class_columns=[...]  data.group_column=NAME
  data.val_fraction=X     data.test_fraction=X  data.split_seed=N  data.pretrain_on=train|all
  data.roi_size=[X,Y,Z]   data.spacing=[...] (3D)  data.image_size=N  data.crop_size=N (2D)
  data.num_workers=N      files read at once
It also checks that the model's patch divides the crop and the batch fits the train split.
"""


def _reproduce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from selfmedmae.experiments.reproduce import Options, run, split_overrides

    _, imagenet = split_overrides(args.overrides)
    out = Path(args.out or f"runs/reproduce/{args.dataset}")
    return run(Options(args.dataset, list(args.overrides), out, args.seeds, args.imagenet or imagenet, args.ablation,
                       args.mask_ratios, args.pretrain_epochs, args.only, args.figures,
                       Path(args.configs) if args.configs else None))


def _numbers(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated {kind.__name__} values") from None

    return parse


def _add_mae_vs_scratch_options(p: argparse.ArgumentParser) -> None:
    """The options ``curve`` and ``pretrain-curve`` share: pre-training overrides and scratch's own config."""
    p.add_argument("--pretrain-set", action="append", default=[], metavar="key=value",
                   help="an override of the pre-training config (repeatable)")
    p.add_argument("--scratch-config", default=None, metavar="CONFIG",
                   help="the scratch runs' own fine-tuning config (e.g. tuned by `selfmedmae tune`); default: CONFIG "
                        "with init=scratch")


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from selfmedmae.experiments import REPRODUCE_DATASETS as DATASETS, REPRODUCE_KINDS as KINDS

    p = sub.add_parser("reproduce", help="a table of the paper: pre-train, fine-tune (MAE / scratch / ImageNet) "
                                         "over seeds, evaluate, compare",
                       description="Runs a table of the paper with the shipped configs/<DATASET>/*.yaml; re-running "
                                   "it continues where it stopped (see docs/experiments.md).")
    p.add_argument("dataset", choices=DATASETS, metavar="{" + ",".join(DATASETS) + "}")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="for every stage (data.root=/data/BTCV), or one kind: pretrain:train.epochs=100, "
                        "finetune:train.accum_iter=2")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="fine-tuning seeds 0..N-1 (default 1)")
    p.add_argument("--imagenet", default=None, metavar="PATH",
                   help="a local ViT-B/16 ImageNet checkpoint (timm keys): adds the ImageNet-init rows")
    p.add_argument("--ablation", action="store_true", help="the mask-ratio x pre-training-epochs grid instead")
    p.add_argument("--mask-ratios", type=_numbers(float), default=None, metavar="R,R,...",
                   help="ablation rows (default 0.125,0.25,0.5,0.75,0.875)")
    p.add_argument("--pretrain-epochs", type=_numbers(int), default=None, metavar="E,E,...",
                   help="ablation columns (default 1/4, 1/2 and all of the config's epochs)")
    p.add_argument("--only", type=lambda t: [k for k in t.split(",") if k], default=None,
                   metavar=",".join(KINDS), help="run only these kinds of stage")
    p.add_argument("--out", default=None, help="output folder (default runs/reproduce/DATASET)")
    p.add_argument("--figures", type=int, default=3, metavar="N", help="overlays per evaluation (default 3)")
    p.add_argument("--configs", default=None, metavar="DIR", help="the configs folder (default ./configs)")
    p.set_defaults(handler=_reproduce)


def _version() -> str:
    """The installed package's version (its metadata: the CLI sits below the package root in the layers)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("selfmedmae")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfmedmae",
        description="Self pre-training with masked autoencoders for medical images (2D and 3D).",
        epilog="documentation:\n  docs/getting-started.md    install, the demo\n"
               "  docs/own-data-3d.md        your own volumes;  docs/own-data-2d.md  your own images\n"
               "  docs/config-reference.md   every config key\n  docs/checkpoints.md        checkpoints, convert",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"selfmedmae {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_command(name: str, help_: str, handler: Callable[[argparse.Namespace], int],
                       epilog: str = CONFIG_EPILOG, example: str = "train.epochs=10") -> None:
        p = sub.add_parser(name, help=help_, description=help_, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("config", metavar="CONFIG", help="YAML config file (see configs/)")
        p.add_argument("overrides", nargs="*", metavar="key=value", help=f"config overrides, e.g. {example}")
        p.set_defaults(handler=handler)

    config_command("pretrain", "MAE self pre-training", _pretrain)
    config_command("finetune", "fine-tune a classifier or UNETR", _finetune)
    config_command("check-data", "check a dataset before a long run", _check_data, CHECK_DATA_EPILOG,
                   "data.root=/data/x")

    p = sub.add_parser("config", help="print the resolved config with the source of each value",
                       description="The config a stage would run with, one key per line, each with its source: "
                                   "default, file (which file of the _base_ chain) or override. Every key is "
                                   "described in docs/config-reference.md.")
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=10")
    p.add_argument("--only-set", action="store_true", help="leave out the keys that keep their default")
    p.set_defaults(handler=_show_config)

    p = sub.add_parser("init-config", help="write starting configs for your own data folder",
                       description="Scan a folder (3d: NIfTI images + label maps, an MSD dataset.json or a CSV of "
                                   "paths; 2d: a CSV of image paths and 0/1 class columns, or a folder of images) "
                                   "and write a starting config FILE (format, channels, labels, sizes, suggested "
                                   "crop and patch) plus FILE-stem_pretrain.yaml and _finetune.yaml with the "
                                   "paper's recipe on top of it. Never overwrites a file. Walkthroughs: "
                                   "docs/own-data-3d.md, docs/own-data-2d.md.")
    p.add_argument("kind", choices=("2d", "3d"), help="2d images (classification) or 3d volumes (segmentation)")
    p.add_argument("--data", required=True, metavar="PATH", help="the folder, dataset.json or CSV to scan")
    p.add_argument("--out", default=None, metavar="FILE", help="data config to write (default: selfmedmae_<kind>.yaml)")
    p.set_defaults(handler=_init_config)

    p = sub.add_parser("convert", help="import a checkpoint of the official code or of the original MAE",
                       description="Convert a checkpoint of the official SelfMedMAE code (official-mae3d: MAE3D "
                                   "pre-training, official-unetr3d: UNETR3D fine-tuning), of the original MAE "
                                   "(mae2d) or a timm-style 2D ViT (vit2d) into a native checkpoint that "
                                   "load_model, init=native:PATH and evaluate read. A state dict does not record "
                                   "the number of heads: give num_heads (and decoder_num_heads for an MAE). "
                                   "See docs/checkpoints.md.")
    p.add_argument("src", metavar="SRC", help="the checkpoint to read (.pth, .pth.tar, .pt)")
    p.add_argument("dst", metavar="DST", help="the native checkpoint to write")
    p.add_argument("--from", dest="source_format", required=True, choices=CONVERT_SOURCES,
                   help="what SRC is")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="model values a state dict cannot tell, e.g. num_heads=12")
    p.set_defaults(handler=_convert)

    p = sub.add_parser("evaluate", help="metrics of a fine-tuned checkpoint on held-out data",
                       description="Dice / HD95 (segmentation) or AUC (classification) of a fine-tuned checkpoint "
                                   "on eval.split, with the data of its run config unless overridden.",
                       epilog="Every key: docs/config-reference.md. key=value overrides the run config saved "
                              "in the checkpoint (eval.split, eval.overlap, eval.sw_batch_size, data.root, "
                              "run.device, ...).")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="e.g. runs/x/checkpoints/best.pt")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval.split=test data.root=/data/x")
    p.add_argument("--out", default=None, help="output folder (default: <run>/eval_<split>)")
    p.add_argument("--figures", type=int, default=3, metavar="N", help="cases drawn as overlays (default 3)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier evaluate in the output folder")
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser("predict", help="run a fine-tuned checkpoint on new volumes or images",
                       description="Label maps in each input's own geometry (NIfTI), or a CSV of label "
                                   "probabilities for 2D images.",
                       epilog="Every key: docs/config-reference.md. key=value items among the inputs override "
                              "the run config saved in the checkpoint (eval.overlap, run.device, ...).")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="NIfTI files, DICOM series folders, folders, an MSD dataset.json (its test list), or "
                        "PNG / JPEG files; "
                        "key=value items override the run config")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--probabilities", action="store_true",
                   help="segmentation: also write the class probabilities (4D NIfTI); 2D predictions.csv always "
                        "holds them")
    p.add_argument("--figures", action="store_true", help="segmentation: also draw image + prediction overlays")
    p.add_argument("--format", default="nifti", choices=OUTPUT_FORMATS,
                   help="label maps as NIfTI (default) or, for DICOM series inputs, as DICOM SEG (docs/dicom.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier predict in --out (never allowed where an input lives)")
    p.set_defaults(handler=_predict, overrides=[])

    p = sub.add_parser("export", help="a checkpoint as a folder to share: safetensors, config, model card, ONNX",
                       description="Write model.safetensors, config.yaml (the resolved run config), model_card.json "
                                   "and README.md (the model card) into a new or empty folder; --onnx adds "
                                   "model.onnx, checked against torch in onnxruntime. load_model, evaluate, predict "
                                   "and init=mae:DIR take the folder. See docs/export.md.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a native checkpoint, e.g. runs/x/checkpoints/best.pt")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new or empty)")
    p.add_argument("--onnx", action="store_true", help="also write the fine-tuned network as model.onnx")
    p.set_defaults(handler=_export)

    p = sub.add_parser("report", help="mean ± std over several runs, and their learning curves")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default=None, help="output folder (default: <common parent of the runs>/report)")
    p.add_argument("--split", default=None, help="use eval_<SPLIT>/metrics.json of each run (default: the newest)")
    p.set_defaults(handler=_report)

    p = sub.add_parser("curve", help="label efficiency: MAE vs scratch at several fractions of the labels",
                       description="Pre-train once (--pretrain), then fine-tune CONFIG from the MAE and from "
                                   "scratch on each fraction of the labelled training cases and seed, evaluate "
                                   "each on the test split, and write curve.md / .csv / .json / .png. "
                                   "Re-running skips finished runs.")
    p.add_argument("config", metavar="CONFIG", help="fine-tuning config (init: mae:PATH unless --pretrain)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the fine-tuning config")
    p.add_argument("--fractions", default="0.1,0.25,0.5,1.0", help="labelled fractions (default 0.1,0.25,0.5,1.0)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per fraction and init (default 3)")
    p.add_argument("--pretrain", default=None, metavar="CONFIG", help="pre-training config, run first if unfinished")
    p.add_argument("--budget", default="epochs", choices=("epochs", "steps"),
                   help="epochs: train.epochs for every fraction (default); steps: epochs scaled by all / kept "
                        "labelled cases, so each fraction gets about the optimiser steps of the full set")
    _add_mae_vs_scratch_options(p)
    p.add_argument("--out", default=None, help="output folder (default: curve/ beside CONFIG's run.dir)")
    p.set_defaults(handler=_curve)

    p = sub.add_parser("pretrain-curve", help="how long to pre-train: fine-tuned validation score against "
                                              "pre-training epochs",
                       description="Pre-train with --pretrain for each length in --epochs (only train.epochs "
                                   "changes), fine-tune CONFIG from each and from scratch for each seed, judge "
                                   "each by its best validation score (the test split is never read), and write "
                                   "pretrain_curve.md / .csv / .json / .png. Re-running skips finished runs.")
    p.add_argument("config", metavar="CONFIG", help="fine-tuning config (its init is set by the curve)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the fine-tuning config")
    p.add_argument("--pretrain", required=True, metavar="CONFIG", help="pre-training config")
    p.add_argument("--epochs", required=True, help="pre-training lengths in epochs, e.g. 100,300,900")
    p.add_argument("--seeds", type=int, default=1, help="fine-tuning seeds per length (default 1)")
    _add_mae_vs_scratch_options(p)
    p.add_argument("--out", default=None, help="output folder (default: pretrain_curve/ beside CONFIG's run.dir)")
    p.set_defaults(handler=_pretrain_curve)

    p = sub.add_parser("tune", help="fine-tuning recipe search: one grid for every init, judged on validation",
                       description="Fine-tune CONFIG for every combination of the --grid values, from every --init "
                                   "and seed; judge each by its best validation score (the test split is never "
                                   "read); write tune.md / .json / .csv with the winner of each init. Re-running "
                                   "skips finished runs. See docs/self-pretraining.md.")
    p.add_argument("config", metavar="CONFIG", help="fine-tuning config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides shared by every run")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a key and its values (repeatable), e.g. --grid train.lr=5e-4,1e-3")
    p.add_argument("--init", action="append", default=[], metavar="NAME=INIT",
                   help="an init to tune (repeatable; default: CONFIG's init and scratch)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per combination and init (default 1)")
    p.add_argument("--out", default=None, help="output folder (default: tune/ beside CONFIG's run.dir)")
    p.set_defaults(handler=_tune)
    _add_reproduce(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value items after an option (``convert A B --from X num_heads=12``) land in ``extra``
    if extra and all("=" in e and not e.startswith("-") for e in extra) and hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except Stopped as exc:  # a stop the user asked for: not an error, but say how to continue
        print(f"selfmedmae: {exc}", file=sys.stderr)
        return exc.exit_code
    except UserError as exc:
        print(f"selfmedmae: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("selfmedmae: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `selfmedmae report ... | head`: the reader has all it wanted
        _silence_stdout()
        return 0
    except (OSError, ValueError) as exc:  # a name beyond the OS limits; after BrokenPipeError, an OSError too
        text = _name_limit_text(exc)
        if text is None:
            raise
        print(f"selfmedmae: error: {text}", file=sys.stderr)
        return 2


def _name_limit_text(exc: BaseException) -> str | None:
    """One line for an error the operating system raises on a name it cannot take (too long, a NUL); None for
    any other error."""
    import errno

    from selfmedmae.config.rules import shown

    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        name = shown(exc.filename) if exc.filename is not None else "a path"
        return f"{name}: file name too long for the operating system (a name over 255 bytes or a too-long path)"
    if isinstance(exc, ValueError) and "null byte" in str(exc):
        return "a path holds a NUL character, which no file name may hold"
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
