"""The split a run recorded in ``<run>/splits.json``, applied to the data as they are now.

Commands that score a run (``evaluate``, and the experiments through it) use exactly the ids the run
recorded for a split, never a split recomputed from today's CSV or datalist: cases added since training
would otherwise move training cases, or the validation case that chose ``best.pt``, into ``test``. Ids are
matched by case id (3D: the file name without suffix; 2D: the image id of the CSV or ChestX-ray14), so
``data.root=...`` (another copy of the data) keeps working. A recorded id the data no longer hold is refused
with the ids; a run without ``splits.json`` (written before it existed) falls back to recomputing, with a
warning.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

from selfmedmae.errors import UserError

RECORDED = ("train", "val", "test", "train_pool")  # the splits splits.json lists by id


def item_id(item: Any) -> str:
    """The id of a dataset item: a 3D case dict's ``id``, a 2D record's ``.id``."""
    return str(item["id"] if isinstance(item, dict) else item.id)


def read_record(run_dir: Path) -> Optional[dict]:
    """``<run_dir>/splits.json`` as a dict, None when absent; a UserError naming the file when unreadable."""
    path = Path(run_dir) / "splits.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: not a splits record (a JSON object with train / val / test id lists)")
    return record


def recorded_items(run_dir: Path, split: str, everything: List[Any], where: str) -> Optional[List[Any]]:
    """The items of ``split`` as ``<run_dir>/splits.json`` lists them, in its order, taken from
    ``everything`` (every item of the data now). None when there is nothing to apply: ``split`` is not a
    recorded one (``all``), or the run has no ``splits.json`` (a warning says the split is recomputed).
    ``where``: the data, for messages. Raises UserError naming the ids the data no longer hold."""
    if split not in RECORDED:
        return None
    path = Path(run_dir) / "splits.json"
    record = read_record(run_dir)
    if record is None:
        print(f"warning: {path} not found (a run from before splits were recorded?); the {split!r} split is "
              f"recomputed from the data as they are now, which is the run's only if no case was added or "
              f"removed since training", file=sys.stderr)
        return None
    ids = record.get(split)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise UserError(f"{path}: no list of {split!r} ids; this record cannot say which cases to score")
    by_id = {item_id(it): it for it in everything}
    missing = [i for i in ids if i not in by_id]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(f"{path}: {len(missing)} of the {len(ids)} {split!r} case(s) the run recorded are not in "
                        f"{where} now ({shown}); scoring other cases would not be the run's {split} split "
                        f"(point data.root at the data the run used, or use eval.split=all)")
    return [by_id[i] for i in ids]
