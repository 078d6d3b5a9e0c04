"""The config a resumed run trains with: its own, with only the settings a resume may change taken from the command.

Every resume goes through here: `train --resume` on the command line (`command_config`, before torch is imported),
`train(cfg, resume=True)` (`resume_config` against the checkpoint's config), a run started over from its
config.yaml, and a sweep deciding whether a spec changed a run (`changed_settings`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from resnetlab.engine.config import Config, apply_overrides, config_from_dict, config_to_dict, load_config, override_key
from resnetlab.engine.rundir import CONFIG, read_config

log = logging.getLogger(__name__)

# Settings a resumed run may change: they do not alter what is computed (on the same kind of device).
RESUME_MAY_CHANGE = ("train.out_dir", "train.quiet", "train.threads", "train.log_every", "train.device")


def command_config(recipe: str | None, overrides: list[str], out: str | None, resume: bool) -> Config:
    """The config of a `train` command: resuming RUN_DIR (`out`) without --recipe, the run's own config.yaml with
    only the overrides a resume may change (`resume_overrides`); else the recipe's (`load_config`)."""
    if resume and out is not None and recipe is None and (Path(out) / CONFIG).is_file():
        return resume_overrides(Path(out), overrides)
    return load_config(recipe, overrides)


def resume_overrides(run_dir: Path, overrides: list[str]) -> Config:
    """The config to resume RUN_DIR with: its own config.yaml plus only the overrides a resume may change; any
    other override the user gave is named in one warning (the run keeps its own value)."""
    cfg = read_config(run_dir)
    allowed = [item for item in overrides if override_key(item) in RESUME_MAY_CHANGE]
    ignored = [item for item in overrides if override_key(item) not in RESUME_MAY_CHANGE]
    if ignored:
        log.warning("resuming with the run's own config; ignoring %s (a resume may change only %s)",
                    ", ".join(ignored[:6]), ", ".join(RESUME_MAY_CHANGE))
    return apply_overrides(cfg, allowed)


def resume_config(cfg: Config, saved: dict[str, Any]) -> Config:
    """The run's saved config, with only the RESUME_MAY_CHANGE settings taken from `cfg` (a difference in any
    other setting is named in one warning)."""
    resumed = config_from_dict(saved)
    ignored = changed_settings(resumed, cfg)
    if ignored:
        log.warning("resuming with the run's own config; ignoring %d different setting(s): %s",
                    len(ignored), ", ".join(f"{k}={new!r}" for k, (_, new) in list(ignored.items())[:8]))
    for key in RESUME_MAY_CHANGE:
        section, name = key.split(".")
        setattr(getattr(resumed, section), name, getattr(getattr(cfg, section), name))
    return resumed


def changed_settings(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every setting `new` changes, but those a resume may change (and
    the recipe's name), in the order of `new`."""
    old_flat, new_flat = flatten(config_to_dict(old)), flatten(config_to_dict(new))
    return {key: (old_flat.get(key), value) for key, value in new_flat.items()
            if key not in RESUME_MAY_CHANGE and key != "recipe" and old_flat.get(key) != value}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {dotted.key: value} (model.options stays one value)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "options":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
