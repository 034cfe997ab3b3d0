"""Subcommands beyond the core ones in ``onebit.cli``: each module here defines ``add_parser(subparsers)``, which
adds one subcommand whose ``fn(args, console) -> int`` only parses and calls library functions."""
