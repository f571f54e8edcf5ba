"""Every ``python`` code block of the READMEs (the repository's and each package's) and docs/ runs
as printed, so a renamed argument or a missing import in a page a user copies from fails here
rather than on their machine.

A page's blocks run in order in one namespace, as a reader meets them. The names a snippet takes
as given (``model``, ``x``, ``val_loader``, ...) are supplied by the page's entry below, small
enough for CPU; a few literals are swapped (each swap must still match the page, so an edited page
fails until its entry is updated): ``"cuda"`` becomes ``"cpu"`` without a GPU, the CIFAR-10 folder
a tiny generated one, and the lines that need the network or a user's own folder are dropped. A
page with python blocks but no entry fails the coverage test; a new block that needs names of its
own fails with a NameError until its entry supplies them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.osgd.multihead import MultiHead, batch
from tests.scripts import ROOT

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


@dataclass
class Page:
    """How to run one page's blocks: ``setup[i](namespace, tmp_path)`` before block ``i``,
    ``edits[i]`` as ``(printed, run instead)`` pairs, ``drop[i]`` substrings of lines left out, and
    ``check[i](namespace)`` after block ``i``."""

    setup: dict[int, Callable[[dict, Path], None]] = field(default_factory=dict)
    edits: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    drop: dict[int, list[str]] = field(default_factory=dict)
    check: dict[int, Callable[[dict], None]] = field(default_factory=dict)


class TaskModel(MultiHead):
    """The multitask model of the osgd tests, with one forward per task (docs/osgd.md's pattern)."""

    def forward_task(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return self.heads[i](self.trunk(x)).squeeze(-1)


def _images(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def _val_loader(ns: dict, tmp: Path) -> None:
    images, labels = _images()
    ns["val_loader"] = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=16)
    ns["x"] = _images(4, seed=1)[0]


def _osgd_readme(ns: dict, tmp: Path) -> None:
    torch.manual_seed(0)
    ns["model"] = TaskModel()
    ns["loss_1"], ns["loss_2"], ns["loss_3"] = ns["model"].losses(*batch(0))
    ns["grads"] = torch.randn(3, 20)
    ns["before"] = [p.detach().clone() for p in ns["model"].heads.parameters()]


def _check_osgd_readme(ns: dict) -> None:
    assert ns["direction"].shape == (20,)
    assert len(ns["info"].cosine) == 3
    after = list(ns["model"].heads.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(after, ns["before"], strict=True)), "opt.step() moved nothing"


def _check_anytime_readme(ns: dict) -> None:
    assert len(ns["all_logits"]) == 3
    assert set(ns["stages"].tolist()) <= {1, 2, 3}
    # predict_within: the last stage done by the 4 ms deadline, or (None, 0) on a slow or busy machine
    assert ns["stage"] in (0, 1, 2, 3)
    assert (ns["logits"] is None) == (ns["stage"] == 0)
    assert ns["logits"] is None or ns["logits"].shape == (4, 10)


def _expect(condition: bool, what: str) -> None:
    assert condition, what


def _parameters(program: torch.export.ExportedProgram) -> int:
    return sum(p.numel() for p in program.parameters())


def _check_accumulated(ns: dict) -> None:
    grads = [p.grad for p in ns["model"].heads.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "the accumulated step left no gradient"


def _image_folder(ns: dict, tmp: Path) -> None:
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp / "train" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (40 * i, 100, 200 if label == "cat" else 0)).save(
                tmp / "train" / label / f"{i}.png"
            )
    ns["epochs"] = 2


def _osgd_doc_loop(ns: dict, tmp: Path) -> None:
    torch.manual_seed(0)
    model = ns["model"] = TaskModel()
    ns["loader"] = [batch(0), batch(1)]
    for k in range(3):
        ns[f"loss_{k + 1}"] = lambda x, y, k=k: model.losses(x, y)[k]


def _osgd_doc_task_functions(ns: dict, tmp: Path) -> None:
    x, y = batch(2)
    ns.update(x=x, y=y.T, n=3, criterion=nn.MSELoss())


def _osgd_doc_accumulation(ns: dict, tmp: Path) -> None:
    ns["micro_batches"] = [batch(3), batch(4)]
    ns["losses"] = ns["model"].losses


def _osgd_doc_scaler(ns: dict, tmp: Path) -> None:
    ns["x"], ns["y"] = batch(5)
    ns["model_losses"] = ns["model"].losses


PAGES: dict[str, Page] = {
    "README.md": Page(
        setup={0: _osgd_readme, 1: _val_loader},
        check={0: _check_osgd_readme, 1: _check_anytime_readme},
    ),
    "docs/osgd.md": Page(
        setup={0: _osgd_doc_loop, 1: _osgd_doc_task_functions, 2: _osgd_doc_accumulation, 3: _osgd_doc_scaler},
        edits={3: [('"cuda"', f'"{DEVICE}"')] * 2},
        check={2: _check_accumulated},
    ),
    "docs/models.md": Page(
        setup={0: lambda ns, tmp: ns.update(x=_images(2)[0])},
        check={
            0: lambda ns: _expect(ns["small"](ns["x"]).shape == (2, 10), "extract_stage(1)'s output shape"),
            1: lambda ns: _expect(
                ns["small"].module()(ns["x"][:1]).shape == (1, 10)
                and _parameters(ns["small"]) < _parameters(ns["stage1"]),
                "the extracted stage exports with fewer parameters, at any batch size",
            ),
        },
    ),
    "docs/evaluation.md": Page(
        setup={0: lambda ns, tmp: (_val_loader(ns, tmp), ns.update(model=_anytime_model()))},
        check={0: lambda ns: _expect(0 < ns["ee"].expected_cost <= 1.0, "expected_cost in (0, 1]")},
    ),
    "docs/hub.md": Page(
        drop={0: ["hf-hub:", "local-dir:"]},  # the network, and a folder of the reader's own
        check={0: lambda ns: _expect(ns["model"].num_classes == 100, "num_classes=100 applied")},
    ),
    # The packages' own pages (their PyPI descriptions) run as printed, with nothing supplied.
    "osgd/README.md": Page(
        check={
            0: lambda ns: _expect(ns["info"].num_tasks == 3 and ns["info"].method == "osgd", "three tasks combined")
        },
    ),
    "timm_anytime/README.md": Page(
        check={
            0: lambda ns: _expect(
                ns["small"](ns["x"]).shape == (1, 10) and ns["stage"] == 3, "three stages, then D_1 extracted"
            )
        },
    ),
    "docs/data.md": Page(
        setup={0: _image_folder},
        edits={
            0: [('"../shared/datasets/cifar10/train"', "str(TMP / 'train')"), ('device="cuda"', f'device="{DEVICE}"')]
        },
        check={0: lambda ns: _expect(tuple(ns["images"].shape) == (6, 3, 32, 32), "one batch of all 6 images")},
    ),
}


def _anytime_model() -> nn.Module:
    import timm

    import timm_anytime  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    return timm.create_model("anytime_cifar_resnet20_w124").eval()


def _runnable(code: str, edits: list[tuple[str, str]], drop: list[str]) -> str:
    for printed, instead in edits:
        assert printed in code, f"the page no longer prints {printed!r}: update this test's entry"
        code = code.replace(printed, instead, 1)
    lines = code.splitlines()
    kept = [line for line in lines if not any(s in line for s in drop)]
    assert len(lines) - len(kept) == len(drop), f"each of {drop} must drop exactly one line"
    return "\n".join(kept)


def test_every_python_block_has_an_entry() -> None:
    pages = [ROOT / "README.md", ROOT / "osgd" / "README.md", ROOT / "timm_anytime" / "README.md"]
    pages += sorted((ROOT / "docs").glob("*.md"))
    with_blocks = {str(p.relative_to(ROOT)) for p in pages if python_blocks(p)}
    assert with_blocks == set(PAGES), "add (or remove) an entry in PAGES for a page's python blocks"
    for name, page in PAGES.items():
        count = len(python_blocks(ROOT / name))
        assert set(page.setup) | set(page.edits) | set(page.drop) <= set(range(count)), name


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_snippets_run(name: str, tmp_path: Path) -> None:
    page = PAGES[name]
    ns: dict = {"__name__": "__snippet__", "TMP": tmp_path}
    for i, code in enumerate(python_blocks(ROOT / name)):
        if i in page.setup:
            page.setup[i](ns, tmp_path)
        code = _runnable(code, page.edits.get(i, []), page.drop.get(i, []))
        exec(compile(code, f"{name}, python block {i + 1}", "exec"), ns)  # the docs' own code
        if i in page.check:
            page.check[i](ns)
