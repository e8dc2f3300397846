"""The `sftkit` command: the same functions the notebooks call, from a shell.

    sftkit demo  [--preset cpu-demo|t4|smoke] [--out DIR] [--eval-split test|dev] [--set KEY=VALUE ...]
                                                            before -> LoRA SFT -> after
    sftkit train [--preset NAME] [--out DIR]                training only, with a run card
    sftkit eval  --models base,tuned [--preset NAME] [--out DIR]
    sftkit trials --grid FILE [--preset NAME] [--out DIR]   LoRA configuration trials (resumable)
    sftkit config [--preset NAME] [--set KEY=VALUE ...]     every --set key: its type, value and help
    sftkit standins --out DIR [--layers N] [--hidden N|full] offline Hub-shaped stand-ins of the t4
                                                            preset's dataset and models (sftkit.standins)
    sftkit export --adapter DIR --out DIR2 [--force]        merge an adapter into its base: a standalone model
    sftkit chat  --model DIR [--system TEXT]                talk to an adapter or merged folder (streamed)
    sftkit push  --folder DIR --repo-id USER/NAME [--private]
                                                            model card + upload to the Hugging Face Hub
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .config import PRESETS


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="default: $SFTKIT_PRESET, else t4 on a GPU and cpu-demo on a CPU")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<preset>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a RunConfig field, e.g. --set train.max_steps=3 --set model.name=DIR "
                             "(repeatable; `sftkit config` lists every key)")


def main(argv: list[str] | None = None) -> int:
    from .notebook import show_sftkit_messages

    show_sftkit_messages()  # the library's progress (the "sftkit" logger) as "[sftkit] ..." lines on stdout
    parser = argparse.ArgumentParser(prog="sftkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
                          help="comma-separated: 'base', a model name, or an adapter folder "
                               "(e.g. runs/cpu-demo/adapter)")
    trials = commands.add_parser("trials", help="LoRA configuration trials from a JSON grid file (resumable)")
    _common(trials)
    trials.add_argument("--grid", required=True, help="JSON: a list of trials or {'base': {...}, 'grid': {...}}")
    standins = commands.add_parser("standins",
                                   help="write offline stand-ins of the t4 preset's Hub datasets and models "
                                        "(smol-smoltalk, SmolLM2-360M/-Instruct/-135M, ultrafeedback_binarized, "
                                        "alpaca, ag_news, bert-base-uncased; Hub layout, random weights)")
    standins.add_argument("--out", required=True, help="folder; the stand-ins go to OUT/HuggingFaceTB/...")
    standins.add_argument("--layers", type=int, default=2, help="transformer blocks (SmolLM2-360M has 32; default 2)")
    standins.add_argument("--hidden", default="120",
                          help="hidden size, a multiple of 30, or 'full' for SmolLM2-360M's 960 (default 120)")
    standins.add_argument("--train-rows", type=int, default=4000)
    standins.add_argument("--test-rows", type=int, default=400)
    config = commands.add_parser("config", help="list every --set key with its type, value in a preset and help")
    config.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="default: $SFTKIT_PRESET, else t4 on a GPU and cpu-demo on a CPU")
    config.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="show the values after these overrides (repeatable), checked as a run checks them")
    _lifecycle_parsers(commands)
    args = parser.parse_args(argv)
    if args.command == "standins":
        return _standins(parser, args)
    if args.command in ("export", "chat", "push"):
        return _lifecycle(args)
    from .config import apply_overrides, default_preset_name, get_preset

    preset = args.preset or default_preset_name()
    try:
        cfg = get_preset(preset)
    except ValueError as error:
        parser.error(str(error))
    try:
        cfg = apply_overrides(cfg, args.overrides)
    except ValueError as error:
        # On the same line: the error is the last line a user (and tests/test_cli.py) reads.
        parser.error(f"{error}; every key with its type, value and help: sftkit config --preset {preset}")

    if args.command == "config":
        return _print_settings(cfg, args.overrides)
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


def _print_settings(cfg: Any, overrides: list[str]) -> int:
    """`sftkit config`: one line per `--set` key (key, type, value, help), so `grep` finds a key whole."""
    from .config import settings

    rows = settings(cfg)
    after = f" after {len(overrides)} --set override{'s' if len(overrides) != 1 else ''}" if overrides else ""
    print(f"# preset {cfg.preset}{after}: every key --set KEY=VALUE takes, its type, its value here and what it does")
    widths = [max(len(getattr(row, column)) for row in rows) for column in ("key", "type", "value")]
    # A long value (a Hub id, a path) would push every help far right; past 32 characters it only pushes its own.
    widths[2] = min(widths[2], 32)
    print(f"{'KEY':<{widths[0]}}  {'TYPE':<{widths[1]}}  {'VALUE':<{widths[2]}}  HELP")
    for row in rows:
        print(f"{row.key:<{widths[0]}}  {row.type:<{widths[1]}}  {row.value:<{widths[2]}}  {row.help}")
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


def _lifecycle_parsers(commands: Any) -> None:
    """The commands for an adapter's life after training: export, chat, push."""
    export = commands.add_parser("export", help="merge an adapter into its base model and save a standalone "
                                                "safetensors model (checked by logits)")
    export.add_argument("--adapter", required=True, help="adapter folder (e.g. runs/cpu-demo/adapter)")
    export.add_argument("--out", required=True, help="folder for the merged model (must be empty or absent)")
    export.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    export.add_argument("--dtype", default="float32", help="precision of the merged weights (default float32)")
    chat = commands.add_parser("chat", help="talk to an adapter or merged folder in the terminal, streamed")
    chat.add_argument("--model", required=True, help="adapter folder or merged folder (sftkit export)")
    chat.add_argument("--system", default=None, help="a system prompt (the demo data have none)")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    chat.add_argument("--dtype", default="auto", help="auto: fp32 on CPU, fp16/bf16 on a GPU")
    push = commands.add_parser("push", help="write a model card and upload an adapter or merged folder to the Hub")
    push.add_argument("--folder", required=True, help="adapter folder or merged folder")
    push.add_argument("--repo-id", required=True, help="USER/NAME on the Hugging Face Hub")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--eval", default=None, metavar="EVAL_JSON",
                      help="an eval.json (sftkit eval, notebook 04) for the card's evaluation table, "
                           "instead of the metrics.json next to the folder")


def _lifecycle(args: argparse.Namespace) -> int:
    """Run export, chat or push; a user's mistake or an unreachable Hub is one line on stderr, exit 1."""
    from .export import ExportError
    from .models import ModelSourceError

    try:
        if args.command == "export":
            from .export import export_merged

            result = export_merged(args.adapter, args.out, force=args.force, dtype=args.dtype)
            print(f"[sftkit] merged {result.adapter_dir} into {result.base_model} -> {result.out_dir} "
                  f"({result.dtype}; logits equal base + adapter to {result.max_logit_diff:.2g}, "
                  f"largest logit {result.max_abs_logit:.3g})")
            print(f"[sftkit] load it with AutoModelForCausalLM.from_pretrained({str(result.out_dir)!r}) and "
                  "AutoTokenizer; try it: sftkit chat --model " + str(result.out_dir))
        elif args.command == "chat":
            from .talk import open_session, run_chat

            session = open_session(args.model, system=args.system, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, dtype=args.dtype)
            run_chat(session, banner=f"[sftkit] chatting with {args.model}")
        else:
            from .hub import HubError, metrics_from_eval, push_folder

            try:
                metrics = metrics_from_eval(args.eval) if args.eval else None
                url = push_folder(args.folder, args.repo_id, private=args.private, metrics=metrics)
            except HubError as error:
                print(f"[sftkit] {error}", file=sys.stderr)
                return 1
            print(f"[sftkit] pushed {args.folder} to {url}")
    except (ExportError, ModelSourceError, FileNotFoundError) as error:
        print(f"[sftkit] {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
