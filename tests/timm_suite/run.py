"""Run timm's own ``tests/test_models.py`` on every model this project registers.

The test file comes from the source distribution of the *installed* timm version (fetched once from
the package index with pip, then cached), so our models meet exactly the contract of the timm
they run with. ``python -m pytest -p timm_anytime`` registers our models before collection, and
``-k`` keeps only their tests.

One deliberate exception: timm's ``test_model_backward`` (and its FX twin) asserts that
``model(x).mean()`` reaches every parameter. For an anytime network ``model(x)`` is the last
subnetwork D_S alone, which by design does not use the earlier stages' heads; those get gradients
from their own stage's loss. ``tests/timm_anytime`` asserts exactly that instead
(``test_every_parameter_gets_a_gradient``). Plain models run the whole file.

    python tests/timm_suite/run.py [--cache DIR] [extra pytest args]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import timm

import timm_anytime

ANYTIME_ONLY_EXCLUDED = ("test_model_backward",)  # also matches test_model_backward_fx


def fetch_timm_tests(cache: Path) -> Path:
    """The extracted ``tests/`` (and pytest config) of the installed timm's sdist, cached."""
    version = timm.__version__
    root = cache / f"timm-{version}"
    if (root / "tests" / "test_models.py").exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        if subprocess.run([*cmd, f"timm=={version}", "-d", tmp], check=False).returncode:
            raise SystemExit(
                f"could not download the source distribution of timm {version}, which holds timm's model "
                f"tests: this needs the package index once, then it is cached in {cache}"
            )
        archive = next(Path(tmp).glob("timm-*.tar.gz"))
        with tarfile.open(archive) as tar:
            prefix = f"timm-{version}/"
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"
            ]
            tar.extractall(cache, members=members, filter="data")
    return root


def selection() -> str:
    """A ``-k`` expression: every registered model, minus the anytime-contract exception."""
    models = timm_anytime.list_models()
    anytime = timm_anytime.list_models(anytime_only=True)  # several heads: model(x) leaves the others unused
    chosen = " or ".join(models)
    excluded = " or ".join(anytime)
    tests = " or ".join(ANYTIME_ONLY_EXCLUDED)
    return f"({chosen}) and not (({tests}) and ({excluded}))"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path(sys.prefix) / "timm-tests", help="where to keep the tests")
    args, pytest_args = parser.parse_known_args()
    root = fetch_timm_tests(args.cache)
    cmd = [
        sys.executable, "-m", "pytest", "-p", "timm_anytime", str(root / "tests" / "test_models.py"),
        "--rootdir", str(root), "-p", "no:cacheprovider", "-q",
        "-W", "ignore::pytest.PytestUnknownMarkWarning", "-k", selection(), *pytest_args,
    ]  # fmt: skip
    print(f"timm {timm.__version__}: running timm's test_models.py on {len(timm_anytime.list_models())} models")
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
