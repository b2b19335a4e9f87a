"""Adopting committed rows: extend a finished study with new methods without retraining.

A reproduction study's committed results JSON (``reproduce.results_json``) outlives its
run folders: a fresh clone has the JSON but not the checkpoints. With
``reproduce.adopt: <results json>`` the methods that JSON already holds are not trained
again; their cells (means, and standard deviations where the JSON has ``std_x1e2``) and,
when it has MIA's and CAVIA's, the budget curve (its ``curve`` and ``<stem>_curve.png``)
come from it, and only the other methods train. A method whose runs have all finished
here is read from its run folders instead (a rerun after training reads its own runs).

Adoption is refused unless the JSON was measured the way this study would measure it:
the same store (by name), outer steps, seeds, backbone and protocol text, and, for every
adopted method whose config digest the JSON records (``config_digests``), the same digest
of that method's config. A JSON written before digests existed is adopted on the other
checks. The output lists the ``adopted`` methods and each method's machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mia_core.config import Config, ConfigError
from mia_core.config.loader import flatten_config
from pipelines.studies.reproduce_curve import curve_markdown
from pipelines.studies.reproduce_report import (
    Stats,
    paper_value,
    protocol_text,
    store_label,
    study_bins,
)
from pipelines.studies.reproduce_spec import CURVE_METHODS, ReproduceSpec

# Keys that name where or as what a run is made, not how it trains.
_IDENTITY_KEYS = (
    "run.name",
    "run.seed",
    "run.out_dir",
    "run.tracking_uri",
    "run.snapshot_steps",
    "run.fault_injection_",  # testing aids: what a run learns does not depend on them
    "data.store",
)


def config_digest(cfg: Config) -> str:
    """A short hash of everything in ``cfg`` that changes what a run learns.

    The run's name, seed, folders, tracking URI, store location, snapshot steps and
    fault-injection settings are left out: two seeds of one method, or the same method on
    another machine, share it.
    """
    flat = {k: v for k, v in flatten_config(cfg).items() if not k.startswith(_IDENTITY_KEYS)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Adopted:
    """What a study takes from a committed results JSON.

    Attributes:
        stats: method -> modality -> cells, in :func:`table_stats`'s layout (``values``
            empty: the per-seed numbers are not committed).
        curve: the JSON's budget curve when both curve methods are adopted, else ``None``.
        source: the JSON's path as given.
        machines: method -> the machine its JSON says it was measured on (``not
            recorded`` for JSONs written before machines were).
    """

    stats: Stats
    curve: dict | None
    source: str
    machines: dict[str, str] = field(default_factory=dict)


def adopt_results(spec: ReproduceSpec, cfg: Config, bases: dict[str, Config]) -> Adopted:
    """Read ``spec.adopt`` and return the cells of the study's methods it already holds.

    Args:
        spec: the study (its methods, seeds, protocol and paper values).
        cfg: a run config of the study (store, steps, bins, eval repeats).
        bases: method -> base config with the budget applied (for the digests).

    Raises:
        ConfigError: the file is missing or not a results JSON, or it was measured on
            another store, budget, seed list, backbone, protocol or method config.
    """
    path = Path(spec.adopt)
    where = f"reproduce.adopt {spec.adopt}"
    try:
        data = json.loads(path.read_text())
        held = data["nmse_x1e2"]
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: no such file (set reproduce.adopt='' to train every method)"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"{where}: not a reproduction results JSON (no nmse_x1e2)") from None
    # The store by name: its folder differs between machines (a built store's name holds
    # the digest of the config it was generated from).
    if Path(str(data.get("store"))).name != Path(store_label(cfg)).name:
        raise ConfigError(
            f"{where}: measured on store {data.get('store')!r}, this study reads "
            f"{store_label(cfg)!r}; adopt only a results JSON of the same study "
            "(or set reproduce.adopt='')"
        )
    expected = {
        "steps": cfg.run.steps,
        "seeds": list(spec.seeds),
        "backbone": spec.backbone,
        "protocol": protocol_text(spec, cfg),
    }
    for key, want in expected.items():
        if data.get(key) != want:
            raise ConfigError(
                f"{where}: {key} is {data.get(key)!r}, this study's is {want!r}; "
                "adopt only a results JSON of the same study (or set reproduce.adopt='')"
            )
    digests = data.get("config_digests", {})
    methods = [m for m in spec.ordered_methods() if m in held]
    for m in methods:
        if m in digests and digests[m] != config_digest(bases[m]):
            raise ConfigError(
                f"{where}: {m}'s config changed since those numbers were measured "
                f"(digest {digests[m]} vs {config_digest(bases[m])}); retrain it with "
                "reproduce.adopt=''"
            )
    stds = data.get("std_x1e2", {})
    bins = study_bins(cfg)
    stats: Stats = {}
    for m in methods:
        stats[m] = {}
        for modality in cfg.data.modalities:
            means = held[m][modality]
            spread = stds.get(m, {}).get(modality, [None] * len(bins))
            stats[m][modality] = [
                {
                    "r_min": lo,
                    "r_max": hi,
                    "mean": math.nan if mean is None else float(mean),
                    "std": math.nan if sd is None else float(sd),
                    "values": [],
                    "paper": paper_value(spec, m, modality, lo, hi),
                }
                for (lo, hi), mean, sd in zip(bins, means, spread, strict=True)
            ]
    curve = None
    if spec.curve_steps and any(m in stats for m in CURVE_METHODS):
        curve = data.get("curve") or {}
        if (curve.get("steps"), curve.get("seed")) != (spec.curve_steps, spec.curve_run_seed):
            raise ConfigError(
                f"{where}: its budget curve (steps {curve.get('steps')}, seed "
                f"{curve.get('seed')}) is not this study's (steps {spec.curve_steps}, seed "
                f"{spec.curve_run_seed}); adopt from the same study or set reproduce.adopt=''"
            )
    recorded = data.get("machines", {})
    machines = {m: recorded.get(m, "not recorded") for m in stats}
    return Adopted(stats, curve, spec.adopt, machines)


def keep_adopted(adopted: Adopted, methods: set[str]) -> Adopted:
    """Only ``methods``' rows (the others have finished runs here, which are read instead).

    The curve stays adopted while a curve method is still adopted.
    """
    stats = {m: v for m, v in adopted.stats.items() if m in methods}
    curve = adopted.curve if any(m in stats for m in CURVE_METHODS) else None
    machines = {m: v for m, v in adopted.machines.items() if m in stats}
    return Adopted(stats, curve, adopted.source, machines)


def write_adopted_curve(adopted: Adopted, out: Path) -> bool:
    """Put the adopted curve where the study writes its own (``curve.{json,md,png}``).

    Returns:
        ``False`` when there is no adopted curve (the study then evaluates its own).
    """
    if adopted.curve is None:
        return False
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(adopted.curve, indent=1))
    title = f"Budget curve (adopted from {adopted.source}, seed {adopted.curve['seed']})"
    (out / "curve.md").write_text(curve_markdown(adopted.curve, title))
    source = Path(adopted.source)
    figure = source.with_name(f"{source.stem}_curve.png")
    if figure.exists() and figure.resolve() != (out / "curve.png").resolve():
        shutil.copyfile(figure, out / "curve.png")
    return True


__all__ = ["Adopted", "adopt_results", "config_digest", "keep_adopted", "write_adopted_curve"]
