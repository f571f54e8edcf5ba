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

By default the deepest member of a family is left out where a shallower one runs the same code
(``DEEPER_TWINS``: the same block classes and nesting, only more blocks per stage). They were
a third of the suite's time on a 2-core CPU (about 2 of 6 minutes; FX tracing and TorchScript
grow with depth) and find nothing their twins do not; ``--all`` runs them too (before a release,
or after changing how depth is built).

``--workers N`` runs the tests in N processes (pytest-xdist), each with its share of the cores'
torch threads.

    python tests/timm_suite/run.py [--all] [--workers N] [--cache DIR] [extra pytest args]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import timm

import timm_anytime

ANYTIME_ONLY_EXCLUDED = ("test_model_backward",)  # also matches test_model_backward_fx

#: Deeper twin -> the registered model that runs the same code at a smaller depth.
DEEPER_TWINS = {
    "anytime_resnet101_w124": "anytime_resnet50_w124",
    "anytime_resnet101_e1234": "anytime_resnet50_e1234",
    "anytime_cifar_sparse_resnet98_wd_alt": "anytime_cifar_sparse_resnet50_wd_alt",
    "anytime_cifar_sparse_resnet98_wd_sim": "anytime_cifar_sparse_resnet50_wd_sim",
    "anytime_cifar_resnet56_w124": "anytime_cifar_resnet42_w124",
    "anytime_cifar_resnet56_e1234": "anytime_cifar_resnet42_e1234",
}


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


def selection(models: list[str]) -> str:
    """A ``-k`` expression: ``models`` and no other registered model, minus the anytime-contract
    exception. ``-k`` matches substrings (``cifar_resnet56`` also selects
    ``anytime_cifar_resnet56_w124``), so the models left out are excluded by name."""
    anytime = " or ".join(timm_anytime.list_models(anytime_only=True))  # model(x) skips the earlier heads
    expression = f"({' or '.join(models)}) and not (({' or '.join(ANYTIME_ONLY_EXCLUDED)}) and ({anytime}))"
    left_out = [m for m in timm_anytime.list_models() if m not in models]
    return f"{expression} and not ({' or '.join(left_out)})" if left_out else expression


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path(sys.prefix) / "timm-tests", help="where to keep the tests")
    parser.add_argument("--all", action="store_true", help="also the deeper twins (DEEPER_TWINS)")
    parser.add_argument("--workers", type=int, default=0, help="test processes (pytest-xdist); 0: this one")
    args, pytest_args = parser.parse_known_args()
    registered = timm_anytime.list_models()
    missing = sorted((set(DEEPER_TWINS) | set(DEEPER_TWINS.values())) - set(registered))
    if missing:
        raise SystemExit(f"DEEPER_TWINS names models that are not registered: {missing}; update it")
    models = registered if args.all else [m for m in registered if m not in DEEPER_TWINS]
    root = fetch_timm_tests(args.cache)
    cmd = [
        sys.executable, "-m", "pytest", "-p", "timm_anytime", str(root / "tests" / "test_models.py"),
        "--rootdir", str(root), "-p", "no:cacheprovider", "-q",
        "-W", "ignore::pytest.PytestUnknownMarkWarning", "-k", selection(models), *pytest_args,
    ]  # fmt: skip
    env = dict(os.environ)
    if args.workers > 0:  # each worker its share of the cores (tests/conftest.py does the same for ours)
        cmd += ["-n", str(args.workers)]
        env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // args.workers)))
    left_out = "" if args.all else f" (left out, run with --all: {', '.join(DEEPER_TWINS)})"
    print(f"timm {timm.__version__}: running timm's test_models.py on {len(models)} models{left_out}")
    return subprocess.run(cmd, check=False, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
