"""The `host` command's top layer: lazy subcommands, one error type, exit codes."""

import subprocess
import sys

import click
import pytest

from host import cli
from host.errors import HostError


def run_host(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "host", *args], capture_output=True, text=True, timeout=120)


def test_python_dash_m_lists_the_commands_that_exist():
    proc = run_host("--help")
    assert proc.returncode == 0, proc.stderr
    assert "bench" in proc.stdout


def test_unknown_command_is_a_usage_error():
    proc = run_host("no-such-command")
    assert proc.returncode == 2
    assert "no-such-command" in proc.stderr


def test_host_error_prints_one_line_and_exit_code(monkeypatch, capsys):
    @click.command()
    def failing() -> None:
        raise HostError("the widget is missing: plug it in", exit_code=3)

    monkeypatch.setattr(cli.LazyGroup, "_load", staticmethod(lambda name: failing if name == "failing" else None))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["failing"])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert err == "host: the widget is missing: plug it in\n"
