"""``anytime-train``: train an anytime (or plain Oracle) network with one of the paper's methods.

Launch on several processes or machines with ``accelerate launch -m timm_anytime.cli.train ...``.
"""

from __future__ import annotations

import sys

from ..train import config_from_args, train
from . import run


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        out = train(config_from_args(argv))
        print(f"run folder: {out} (evaluate it with `anytime-eval {out}`)")

    return run("anytime-train", job)


if __name__ == "__main__":
    sys.exit(main())
