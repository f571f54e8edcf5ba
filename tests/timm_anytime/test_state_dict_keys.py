"""Every registered model keeps its state-dict keys and shapes (checkpoints stay loadable).

``state_dict_keys.json`` was recorded before the models were reorganized (issue 16): per model, a
hash of its sorted ``key:shape`` lines and the number of keys. A change that renames, adds or
reshapes a parameter or buffer fails here; if it is intended, record the file again with
``python tests/timm_anytime/test_state_dict_keys.py`` and say why in the commit (shipped
checkpoints and Hub models would need converting).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import timm

import timm_anytime

RECORD = Path(__file__).with_name("state_dict_keys.json")


def fingerprint(name: str) -> dict[str, object]:
    state = timm.create_model(name, num_classes=10).state_dict()
    lines = sorted(f"{key}:{tuple(value.shape)}" for key, value in state.items())
    return {"sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(), "keys": len(lines)}


def recorded() -> dict[str, dict[str, object]]:
    return json.loads(RECORD.read_text()) if RECORD.is_file() else {}


def test_every_registered_model_is_recorded() -> None:
    assert sorted(recorded()) == sorted(timm_anytime.list_models())


@pytest.mark.parametrize("name", sorted(recorded()))
def test_state_dict_keys_and_shapes_are_unchanged(name: str) -> None:
    assert fingerprint(name) == recorded()[name]


if __name__ == "__main__":
    RECORD.write_text(json.dumps({n: fingerprint(n) for n in timm_anytime.list_models()}, indent=1) + "\n")
    print(f"recorded {RECORD}", file=sys.stderr)
