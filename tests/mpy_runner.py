# Runs firmware test modules under the MicroPython unix port (also works on CPython).
# Usage: micropython tests/mpy_runner.py MODULE [MODULE ...]
# Prints one line per test: "@@PASS module.test", "@@FAIL module.test: <error>" (the traceback
# follows on stderr) or "@@SKIP module.test: reason", and exits with the number of failures.
import sys


def _run_module(name):
    failures = 0
    try:
        module = __import__(name)
    except Exception as exc:  # an import error fails every test of the module at once
        print("@@FAIL %s.<import>: %s: %s" % (name, type(exc).__name__, exc))
        sys.print_exception(exc) if hasattr(sys, "print_exception") else None
        return 1
    for attr in sorted(dir(module)):
        if not attr.startswith("test_"):
            continue
        fn = getattr(module, attr)
        if not callable(fn):
            continue
        try:
            fn()
        except Exception as exc:
            if type(exc).__name__ == "SkipTest":
                print("@@SKIP %s.%s: %s" % (name, attr, exc))
                continue
            failures += 1
            print("@@FAIL %s.%s: %s: %s" % (name, attr, type(exc).__name__, exc))
            if hasattr(sys, "print_exception"):
                sys.print_exception(exc)
            else:
                import traceback

                traceback.print_exc()
        else:
            print("@@PASS %s.%s" % (name, attr))
    return failures


def main(names):
    failures = 0
    for name in names:
        failures += _run_module(name)
    sys.exit(failures)


main(sys.argv[1:])
