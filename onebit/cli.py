"""``onebit`` command line: subcommands that parse arguments and call library functions."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys

from rich.console import Console

__all__ = ["main"]


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    from onebit.config import ConfigError, apply_overrides
    from onebit.recipes import DEFAULT_RECIPE, get_recipe
    from onebit.train.recipe import RunDirError, RunInterrupted, TrainingDiverged, run

    if os.environ.get("RANK", "0") != "0":
        # under torchrun every rank reaches the same errors and decisions (they are shared): rank 0 reports them
        console = Console(quiet=True)
    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe:  # `onebit train key=value` without a recipe name
        overrides.insert(0, recipe)
        recipe = None
    try:
        if args.resume:
            if recipe or overrides or args.smoke:
                raise ConfigError("--resume continues a run with its own config.json; give no recipe/overrides/--smoke")
            cfg = None
        else:
            cfg = apply_overrides(get_recipe(recipe or DEFAULT_RECIPE, smoke=args.smoke), overrides)
        run(cfg, out_dir=args.out, resume=args.resume, console=console)
    except (ConfigError, KeyError, RunDirError) as e:
        console.print(f"[red]error:[/] {e.args[0] if isinstance(e, KeyError) else e}")
        return 2
    except TrainingDiverged as e:
        console.print(f"[red]{e}[/]")
        return 1
    except RunInterrupted as e:
        console.print(f"[yellow]{e}[/]")
        return 130
    return 0


def _cmd_summary(args: argparse.Namespace, console: Console) -> int:
    from onebit.analysis.complexity import complexity, format_table
    from onebit.models.io import ModelLoadError, input_channels, load_model

    try:
        model, info = load_model(args.model)
    except (ModelLoadError, OSError, ValueError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    if args.resolution:
        size = (input_channels(model), args.resolution, args.resolution)
    else:
        size = tuple(info.get("input_size") or (input_channels(model), 224, 224))
    report = complexity(model, size)
    if args.json:
        print(json.dumps({"model": str(args.model), "input_size": list(size), **report.to_dict(args.per_layer)}))
    else:
        console.print(format_table(report, per_layer=args.per_layer, title=f"{args.model} at {size}"))
    return 0


def _cmd_import_official(args: argparse.Namespace, console: Console) -> int:
    from onebit.analysis.complexity import complexity, format_table
    from onebit.models.io import save_model_dir
    from onebit.models.official import OfficialCheckpointError, load_official

    try:
        options = {}
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
            options[key] = int(value) if value.lstrip("-").isdigit() else value
        model = load_official(args.layout, args.checkpoint, strict=not args.lenient, **options)
    except (OfficialCheckpointError, KeyError, OSError, ValueError, TypeError) as e:
        console.print(f"[red]error:[/] {e.args[0] if isinstance(e, KeyError) else e}")
        return 2
    out = save_model_dir(model, args.out, extra={"layout": args.layout, "source": str(args.checkpoint)})
    console.print(format_table(complexity(model, (3, 224, 224)), title=f"{args.layout} (imported)"))
    console.print(f"Wrote {out / 'model.safetensors'} and {out / 'model.json'}")
    return 0


def _cmd_recipes(args: argparse.Namespace, console: Console) -> int:
    from onebit.recipes import list_recipes, recipe_header

    for name in list_recipes():
        console.rule(name)
        console.print(recipe_header(name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onebit", description="Train, analyse, compress and run binary neural networks.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    t = sub.add_parser(
        "train",
        help="train a recipe (default: the AdamBNN two-step recipe on the bundled digits); "
        "several processes: torchrun --nproc_per_node N -m onebit train ...",
    )
    t.add_argument("recipe", nargs="?", help="recipe name (see `onebit recipes`); default adambnn_digits")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. stages.1.epochs=3 data.batch_size=32")
    t.add_argument("--smoke", action="store_true", help="the recipe's tiny variant (seconds on a CPU)")
    t.add_argument("--out", help="run directory (default runs/<recipe>-<time>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    t.set_defaults(fn=_cmd_train)

    s = sub.add_parser("summary", help="parameters (#Param MB), BOPs, FLOPs and OPs of a model, in the papers' units")
    s.add_argument("model", help="registered model name, model directory (import-official) or run directory")
    s.add_argument("--resolution", type=int, help="input side length (default 224, or the run's image size)")
    s.add_argument("--per-layer", action="store_true", help="one row per conv/linear layer")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(fn=_cmd_summary)

    i = sub.add_parser("import-official", help="import a checkpoint released with the papers into a model directory")
    i.add_argument("layout", help="official layout (a file stem of spec/official-keys), e.g. bnext_tiny, reactnet_a")
    i.add_argument("checkpoint", help=".pth/.pth.tar/.pt (read with weights_only=True) or .safetensors")
    i.add_argument("--out", required=True, help="directory for model.safetensors + model.json")
    i.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="layout option, e.g. se_bits=4 for bnext_tiny_quant / bnext18_quant (repeatable)",
    )
    i.add_argument("--lenient", action="store_true", help="warn about extra keys instead of failing")
    i.set_defaults(fn=_cmd_import_official)

    r = sub.add_parser("recipes", help="list the recipes with their headers")
    r.set_defaults(fn=_cmd_recipes)

    import onebit.commands

    for mod in sorted(pkgutil.iter_modules(onebit.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"onebit.commands.{mod.name}").add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # logs and pipes get a fixed wide console so tables are not wrapped at rich's 80-column fallback
    console = Console() if sys.stdout.isatty() else Console(width=120)
    if args.version:
        from onebit import __version__

        console.print(f"onebit {__version__}")
        return 0
    if args.command is None:
        build_parser().print_help()
        return 0
    return args.fn(args, console)


if __name__ == "__main__":
    sys.exit(main())
