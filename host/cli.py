"""The `host` command. Each subcommand lives in its own module and is imported only when used,
so `host bench` does not pay for esptool and `host flash` does not pay for numpy."""

from __future__ import annotations

import importlib
import sys

import click

from host import __version__
from host.errors import HostError

# name -> (module, attribute of the click command in it)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("host.bench", "bench"),
    "sim": ("host.sim.cli", "sim"),
    "virtual": ("host.virtual.cli", "virtual"),
    "flash": ("host.fleet.cli", "flash"),
    "deploy": ("host.fleet.cli", "deploy"),
    "verify": ("host.fleet.cli", "verify"),
    "fleet": ("host.fleet.cli", "fleet"),
    "calibrate": ("host.calibrate", "calibrate"),
    "monitor": ("host.monitor", "monitor"),
    "test": ("host.hil", "test"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only hide commands whose own module is absent from this build; a missing
            # dependency inside an existing module must surface.
            if exc.name and module_name.startswith(exc.name):
                return None
            raise
        return getattr(module, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="host")
def cli() -> None:
    """Flash, calibrate, monitor and simulate thermogate fever-screening units."""


def main(argv: list[str] | None = None) -> None:
    try:
        status = cli.main(args=argv, prog_name="host", standalone_mode=False)
    except HostError as exc:
        click.echo(f"host: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("host: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("host: interrupted", err=True)
        sys.exit(130)
    # A command may return an int exit status (e.g. `host verify` on a difference).
    if isinstance(status, int) and status:
        sys.exit(status)
