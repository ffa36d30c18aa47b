"""Building a gate's template cache and matcher: one factory, used everywhere.

The service, the doctor, the simulation rigs, the benchmarks and the tests all get their
:class:`~gate.match.cache.TemplateCache` and :class:`~gate.match.matcher.Matcher` here,
from the config and the two keys: ``cache-key`` (wraps the cache's data key) and
``template-key`` (the event's template-protection key). Where the keys come from is the
caller's business (:func:`load_keys` finds them the way the service does).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gate.config import Config
from gate.credentials import Key, load_key
from gate.match.cache import TemplateCache
from gate.match.cachefile import Binding
from gate.match.embedders import embedder_spec
from gate.match.matcher import Matcher
from gate.match.threshold import CALIBRATIONS, ThresholdPolicy
from sync.protect import Protector


@dataclass(frozen=True)
class TemplateKeys:
    """The two keys a gate's templates need."""

    cache: Key
    template: Key


class Templates(NamedTuple):
    """A gate's cache and the matcher that searches it."""

    cache: TemplateCache
    matcher: Matcher

    def close(self) -> None:
        """Zero both RAM copies (the files stay)."""
        self.matcher.wipe()
        self.cache.close()


def load_keys(cfg: Config) -> TemplateKeys:
    """The keys as the service loads them: credentials, key files, or (when the config
    allows it) ephemeral keys."""
    c = cfg.cache
    return TemplateKeys(
        load_key("cache-key", key_file=Path(c.key_file) if c.key_file else None,
                 allow_ephemeral=c.allow_ephemeral_keys),
        load_key("template-key",
                 key_file=Path(c.template_key_file) if c.template_key_file else None,
                 allow_ephemeral=c.allow_ephemeral_keys))


def binding(cfg: Config) -> Binding:
    """Who this gate's cache belongs to (venue, event and gate from ``[gate]``) and the
    template model of ``[models] embedder``."""
    return Binding(cfg.gate.venue, cfg.gate.event, cfg.gate.id,
                   embedder_spec(cfg.models.embedder).model.id)


def threshold_policy(cfg: Config, embedder: str | None = None) -> ThresholdPolicy:
    """The threshold policy of ``[match]`` with the configured embedder's calibration."""
    name = embedder or cfg.models.embedder
    return ThresholdPolicy(cfg.match.target_fpir, CALIBRATIONS[name], cfg.match.threshold)


def open_templates(cfg: Config, *, keys: TemplateKeys | None = None,
                   directory: Path | None = None, clock: Callable[[], float] = time.time,
                   embedder: str | None = None,
                   protector: Protector | None = None) -> Templates:
    """The cache (not loaded yet: call ``cache.load()``) and matcher of this gate.

    ``keys`` default to :func:`load_keys`; ``directory`` to ``[cache] dir``; ``embedder``
    to ``[models] embedder`` (it names the template model and the calibration);
    ``protector`` to the transform of ``keys.template`` (pass one already built for that
    key to save its QR decomposition).
    """
    keys = keys or load_keys(cfg)
    spec = embedder_spec(embedder or cfg.models.embedder)
    cache = TemplateCache(Path(directory or cfg.cache.dir), kek=keys.cache,
                          binding=dataclasses.replace(binding(cfg), model=spec.model.id),
                          model=spec.model, clock=clock,
                          max_valid_days=cfg.cache.max_valid_days,
                          coarse_min=cfg.match.coarse_min, threads=cfg.match.threads)
    if protector is None:
        protector = Protector(keys.template.material, dim=spec.model.dim)
    matcher = Matcher(cache, protector=protector,
                      policy=threshold_policy(cfg, spec.name), margin=cfg.match.margin)
    return Templates(cache, matcher)
