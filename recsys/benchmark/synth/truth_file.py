"""The ground truth's file: an uncompressed .npz with deterministic bytes, and its checks on reading.

The file holds the user ids, time zones and final consent, every trait (float32), the JSON metadata
(format, generator version, seed, end date, days, the catalog and its fingerprint, time zones,
categories, channels) and every model parameter. Written and read through
`recsys.benchmark.synth.truth.GroundTruth.save` / `GroundTruth.load`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.benchmark.synth.params import CATEGORIES, TIMEZONES, SynthParams
from recsys.benchmark.synth.traits import Traits
from recsys.config.catalog import Catalog
from recsys.errors import GenerateError

if TYPE_CHECKING:
    from recsys.benchmark.synth.truth import GroundTruth

TRUTH_FORMAT = "recsys-synth-truth/1"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_TRAIT_NAMES = tuple(f.name for f in dataclasses.fields(Traits))


def catalog_meta(catalog: Catalog) -> dict:
    """The catalog as stored in the truth metadata."""
    return catalog.to_dict()


def write_truth(truth: GroundTruth, path: Path) -> None:
    """Write the truth as an .npz with its metadata (deterministic bytes for identical content)."""
    tr = truth.traits
    arrays = {
        "user_ids": truth.user_ids,
        "timezone": truth.timezone,
        "consent": truth.consent,
        **{name: np.asarray(getattr(tr, name), dtype=np.float32) for name in _TRAIT_NAMES},
        "meta_json": np.array(json.dumps(truth.meta, sort_keys=True)),
        "params_json": np.array(truth.params.to_json()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(array, order="C"), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def read_truth(path: Path) -> dict[str, Any]:
    """The `GroundTruth` constructor's arguments from a truth file written by `recsys generate-data`."""
    path = Path(path)
    data = _read_arrays(path)
    meta = json.loads(str(data["meta_json"].item()))
    catalog = _stored_catalog(path, meta)
    traits = Traits(**{name: data[name].astype(np.float64) for name in _TRAIT_NAMES})
    return {
        "user_ids": data["user_ids"],
        "traits": traits,
        "consent": data["consent"],
        "timezone": data["timezone"],
        "catalog": catalog,
        "params": SynthParams.from_json(str(data["params_json"].item())),
        "meta": meta,
    }


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file, once it is known to hold all a truth needs."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise GenerateError(f"ground truth file not found: {path}") from e
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise GenerateError(f"{path}: not a ground truth file ({e})") from e
    required = {"user_ids", "timezone", "consent", "meta_json", "params_json"} | set(_TRAIT_NAMES)
    missing = sorted(required - data.keys())
    if missing:
        raise GenerateError(f"{path}: not a ground truth file (missing arrays {missing})")
    return data


def _stored_catalog(path: Path, meta: dict) -> Catalog:
    """The catalog the truth was generated with, once the metadata is known to fit this version."""
    if meta.get("format") != TRUTH_FORMAT:
        raise GenerateError(f"{path}: unsupported truth format {meta.get('format')!r}, expected {TRUTH_FORMAT!r}")
    if list(meta["timezones"]) != list(TIMEZONES) or list(meta["categories"]) != list(CATEGORIES):
        raise GenerateError(f"{path}: written with other time zones or categories than this version knows")
    catalog = Catalog.from_dict(meta["catalog"])
    if catalog.fingerprint() != meta["catalog_fingerprint"]:
        raise GenerateError(f"{path}: the stored catalog does not match its fingerprint")
    return catalog
