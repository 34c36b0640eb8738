"""The subcommands of ``steno``: each module has NAME, register(subparsers) and run(args)."""
