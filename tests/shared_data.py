"""Where the tests find the shared CIFAR-10 copy, and the marker that skips a test without it.

The copy is an ImageFolder tree of JPEGs next to the checkout (``../shared/datasets/cifar10``, with
``train/`` and ``test/``). It is never copied into the repository, so a clone elsewhere skips these
tests cleanly.
"""

from __future__ import annotations

import pytest

from tests.scripts import ROOT

CIFAR10 = ROOT.parent / "shared" / "datasets" / "cifar10"

needs_cifar10 = pytest.mark.skipif(
    not CIFAR10.is_dir(), reason=f"needs the CIFAR-10 ImageFolder tree at {CIFAR10} (see its README)"
)
