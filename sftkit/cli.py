"""The `sftkit` command: the same functions the notebooks call, from a shell.

    sftkit demo  [--preset cpu-demo|t4|smoke] [--out DIR] [--eval-split test|dev] [--set KEY=VALUE ...]
                                                            before -> LoRA SFT -> after
    sftkit train [--preset NAME] [--out DIR]                training only, with a run card
    sftkit eval  --models base,tuned [--preset NAME] [--out DIR]
    sftkit trials --grid FILE [--preset NAME] [--out DIR]   LoRA configuration trials (resumable)
    sftkit standins --out DIR [--layers N] [--hidden N|full] offline Hub-shaped stand-ins of the t4
                                                            preset's dataset and models (sftkit.standins)
"""

from __future__ import annotations

import argparse
import sys

from .config import PRESETS


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="default: $SFTKIT_PRESET, else t4 on a GPU and cpu-demo on a CPU")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<preset>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a RunConfig field, e.g. --set train.max_steps=3 --set model.name=DIR (repeatable)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sftkit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="baseline, LoRA SFT and evaluation, with a report")
    _common(demo)
    demo.add_argument("--eval-split", choices=("test", "dev"), default=None,
                      help="held-out split of the built-in tasks (default: the preset's, test); "
                           "use dev while choosing designs or settings")
    _common(commands.add_parser("train", help="LoRA SFT only, writing a run card and the adapter"))
    evaluate = commands.add_parser("eval", help="evaluate models on the offline evaluation set")
    _common(evaluate)
    evaluate.add_argument("--models", default="base",
                          help="comma-separated: 'base', a model name, or an adapter folder (e.g. runs/cpu-demo/adapter)")
    trials = commands.add_parser("trials", help="LoRA configuration trials from a JSON grid file (resumable)")
    _common(trials)
    trials.add_argument("--grid", required=True, help="JSON: a list of trials or {'base': {...}, 'grid': {...}}")
    standins = commands.add_parser("standins", help="write offline stand-ins of smol-smoltalk, SmolLM2-360M and "
                                                    "SmolLM2-360M-Instruct (Hub layout, random weights)")
    standins.add_argument("--out", required=True, help="folder; the stand-ins go to OUT/HuggingFaceTB/...")
    standins.add_argument("--layers", type=int, default=2, help="transformer blocks (SmolLM2-360M has 32; default 2)")
    standins.add_argument("--hidden", default="120",
                          help="hidden size, a multiple of 30, or 'full' for SmolLM2-360M's 960 (default 120)")
    standins.add_argument("--train-rows", type=int, default=4000)
    standins.add_argument("--test-rows", type=int, default=400)
    args = parser.parse_args(argv)
    if args.command == "standins":
        return _standins(parser, args)
    from .config import apply_overrides, resolve_preset

    try:
        cfg = apply_overrides(resolve_preset(args.preset), args.overrides)
    except ValueError as error:
        parser.error(str(error))

    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.preset, args.out, cfg=cfg, eval_split=args.eval_split)
    elif args.command == "train":
        from .runs import run_training

        run_training(args.preset, args.out, cfg=cfg)
    elif args.command == "eval":
        from .runs import run_evaluation

        run_evaluation(args.preset, args.out, [m.strip() for m in args.models.split(",") if m.strip()], cfg=cfg)
    elif args.command == "trials":
        from .chapters.trials import run_trials_cli

        run_trials_cli(args.grid, args.preset, args.out)
    return 0


def _standins(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .standins import build_standins

    try:
        hidden = None if args.hidden == "full" else int(args.hidden)
        paths = build_standins(args.out, train_rows=args.train_rows, test_rows=args.test_rows,
                               num_hidden_layers=args.layers, hidden_size=hidden)
    except ValueError as error:
        parser.error(str(error))
    print(f"[sftkit] stand-ins in {paths.root}; run the t4 preset on them with:")
    print("  sftkit demo --preset t4 " + " ".join(f"--set {o}" for o in paths.overrides()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
