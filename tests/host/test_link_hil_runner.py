"""`host test`'s runner: the HIL suite is skipped in normal runs and reports each check by name."""

from __future__ import annotations

import subprocess
import sys

from host import PROJECT_ROOT
from host.cli import main
from host.hil import check_title, run_suite


def test_hil_suite_is_skipped_without_a_unit():
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/hil", "-q", "-p", "no:cacheprovider"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={k: v for k, v in __import__("os").environ.items() if k != "THERMOGATE_HIL_PORT"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped" in proc.stdout and "passed" not in proc.stdout and "failed" not in proc.stdout


def test_unreachable_unit_fails_every_check_by_name(tmp_path):
    results, _ = run_suite(str(tmp_path / "no-such-port"), virtual=False)
    names = {r.name for r in results}
    assert "frame rate matches configured refresh" in names
    assert "driver on unit matches cpython" in names
    assert all(r.outcome in ("failed", "error") for r in results)
    assert any("cannot open" in r.message for r in results)


def test_cli_exit_status_and_usage(tmp_path, capsys):
    try:
        main(["test", "--port", str(tmp_path / "nothing")])
    except SystemExit as exc:
        assert exc.code == 1
    else:
        raise AssertionError("host test passed on a missing unit")
    err = capsys.readouterr().err
    assert "checks failed" in err
    try:
        main(["test"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "exactly one of --port" in capsys.readouterr().err


def test_check_titles():
    assert check_title("test_files_match_release") == "files match release"
