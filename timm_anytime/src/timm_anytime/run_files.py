"""A run folder's files, written so that a kill at any point leaves none of them half-written.

* Whole files (``config.yaml``, a resume's cut of ``metrics.jsonl``, the final weights):
  :func:`atomic_write_text` and :func:`atomic_copy` write beside the file under a ``.partial`` name
  and rename it into place, so the folder holds the earlier file or the new one, never part of one.
  Where a file marks work as done (the final ``model.safetensors``; ``eval.json``, which
  ``anytime-eval`` writes the same way after its per-input results), write it last.
* The append-only JSON-lines logs (``metrics.jsonl``, ``environment.jsonl``): a process killed while
  it appends leaves a last line without its newline, and a reader may see a line still being
  written. Reading (:func:`read_records`) leaves an unterminated last line that does not parse out;
  appending (:func:`append_record`) first drops such a line, so that the next record starts on a
  line of its own instead of gluing itself onto the fragment (which would damage both). A damaged
  line anywhere else is an error naming the file and the line.
* Whole folders (a run's copy in a results tree, a snapshot of a run in progress):
  :func:`replace_folder` fills a hidden ``.NAME.partial`` sibling, sets the earlier folder aside
  under ``.NAME.old`` and renames the new one into place, so the name holds the earlier folder
  whole or the new one whole (or, for the instant between the two renames, nothing, which the next
  call repairs), never a half-filled or half-deleted one. :func:`remove_folder` deletes a folder
  under a hidden name, so that a kill during the delete leaves no half folder under the real one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

Filled = TypeVar("Filled")


def read_records(file: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Each record of a JSON-lines ``file`` with its line, blank lines skipped; an unterminated last
    line that does not parse (cut off, or still being written) is left out. Any other line that does
    not parse raises ``ValueError`` naming the file and the line."""
    file = Path(file)
    lines = file.read_text().split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append((line, json.loads(line)))
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: an unfinished write
                break
            raise ValueError(
                f"{file}, line {number}, is not a JSON record ({error.msg}): the file is damaged; "
                "delete that line (its record is lost) to read the rest"
            ) from None
    return records


def append_record(file: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line of ``file`` (created if missing). A last line that a killed
    writer left without its newline is dropped first, or ended with one if it is a whole record
    (what :func:`read_records` reads of it)."""
    file = Path(file)
    with file.open("a+b") as handle:
        handle.seek(0)
        content = handle.read()
        if content and not content.endswith(b"\n"):
            complete = content.rfind(b"\n") + 1
            try:  # a whole record that lacks only its newline is kept, as read_records keeps it
                json.loads(content[complete:])
                handle.write(b"\n")
            except ValueError:  # a cut-off record (or one cut inside a character): drop it
                handle.truncate(complete)
        handle.write((json.dumps(record) + "\n").encode())


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: under ``path.partial`` first, then renamed into place."""
    path = Path(path)
    partial = _partial(path)
    partial.write_text(text)
    os.replace(partial, path)


def atomic_copy(source: str | Path, target: str | Path) -> None:
    """Copy the file ``source`` to ``target`` whole: under ``target.partial`` first, then renamed."""
    target = Path(target)
    partial = _partial(target)
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def replace_folder(target: str | Path, fill: Callable[[Path], Filled]) -> Filled:
    """Put a new folder in place of ``target`` (created if missing) whole: ``fill(staging)`` creates
    and fills the hidden sibling ``staging`` (``.NAME.partial``); the earlier ``target`` is renamed
    to ``.NAME.old``, ``staging`` renamed into place, and the old one deleted last. A ``fill`` that
    raises leaves ``target`` as it was (and removes ``staging``); a process killed at any point
    leaves ``target`` whole, or missing with its earlier copy in ``.NAME.old``, which the next call
    puts back before it starts. Returns what ``fill`` returned."""
    target = Path(target)
    staging, old = target.with_name(f".{target.name}.partial"), target.with_name(f".{target.name}.old")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() and old.is_dir():  # a call killed between its two renames
        old.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    try:
        filled = fill(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not staging.is_dir():
        raise RuntimeError(f"replace_folder: fill did not create {staging}; it must create and fill that folder")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return filled


def remove_folder(target: str | Path) -> None:
    """Delete the folder ``target`` (if there): renamed to the hidden ``.NAME.deleted`` first, so that
    a kill during the delete leaves nothing under ``target`` that a reader would take for the folder;
    a later call deletes what such a kill left."""
    target = Path(target)
    doomed = target.with_name(f".{target.name}.deleted")
    shutil.rmtree(doomed, ignore_errors=True)
    if target.exists():
        target.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
