"""`shoprouter` command line: one typer app; each command group lives in its own module."""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import ShopRouterError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Route e-commerce support messages to agents.")
data_app = typer.Typer(no_args_is_help=True, help="Synthetic dataset and corrections.")
app.add_typer(data_app, name="data")

# Modules that register commands on `app` / `data_app` (imported for their side effect, in CLI order).
COMMAND_MODULES = ("routing", "datasets", "training", "benchmark", "serving")


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; bad input becomes a one-line error on stderr and exit code 2."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except ShopRouterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("error: aborted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # click usage errors (typer vendors click, so match by shape)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            print(f"error: {exc.format_message()}", file=sys.stderr)
            return exc.exit_code or 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
