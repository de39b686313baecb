"""The agent's preprocessing step: extract features, fit the joint transform, apply it.

:func:`extract_features` runs first (before partitioning or sharing), so every later step —
the data agreement, shares of ``data.share=features:F``, statistics — sees features only.
:func:`prepare` then fits ``data.preprocess`` on this agent's own rows (never a shared pool's,
which other agents count already) and applies the identical transform to the training rows
and the test sets; a ``pca:K`` that narrows the input rebuilds the zoo model for K inputs
(same seed, so every agent starts alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ddla.data.preprocess.spec import parse_preprocess
from ddla.errors import ConfigError

if TYPE_CHECKING:
    from ddla.aggregate import Protection
    from ddla.comm import Transport
    from ddla.compute.layout import Layout
    from ddla.config import RunConfig
    from ddla.data.preprocess.transform import Transform
    from ddla.job import Job, Split


def _mapped(fn: Any, pair: Any) -> Any:
    if pair is None:
        return None
    if callable(pair):
        return lambda rank: _mapped(fn, pair(rank))
    x, y = pair
    return fn(x), y


def extract_features(job: Job, config: RunConfig) -> None:
    """Replace the Job's inputs by ``job.preprocess(x)`` (in place; once)."""
    if job.preprocess is None:
        if config.data.share.startswith("features:"):
            raise ConfigError(
                f"data.share={config.data.share} shares extracted features, and this Job "
                "extracts none",
                help="pass Job(preprocess=feature_fn) in the Python API, or use "
                "data.share=shared:F",
            )
        return
    if config.data.pull_every:
        raise ConfigError(
            "Job(preprocess=...) with data.pull_every: pulls move raw samples",
            help="use data.share=features:F to share extracted features",
        )
    fn, job.preprocess = job.preprocess, None

    def features(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fn(x).detach().to(torch.float32).contiguous()

    job.train = _mapped(features, job.train)
    job.test = _mapped(features, job.test)
    job.site_test = _mapped(features, job.site_test)


@dataclass(kw_only=True)
class Prepared:
    """Training rows and test sets after the transform, and the layout to train."""

    x_train: torch.Tensor
    site_test: Split | None
    transform: Transform
    layout: Layout


def prepare(
    job: Job,
    config: RunConfig,
    transport: Transport,
    *,
    x_train: torch.Tensor,
    shard: np.ndarray,
    site_test: Split | None,
    layout: Layout,
    protection: Protection | None = None,
) -> Prepared | None:
    """Fit ``data.preprocess`` over all agents and apply it here; None when it is ``none``."""
    spec = parse_preprocess(config.data.preprocess)
    if spec is None:
        return None
    if not job.task_spec.labelled:
        raise ConfigError(
            f"data.preprocess={spec} transforms feature vectors; task {job.task} has tokens",
            help="unset data.preprocess for language models",
        )
    from ddla.data.preprocess.fit import fit_transform

    own = shard
    if not job.is_local:  # a shared pool's rows (appended past the dataset) are peers'
        own = shard[shard < len(job.train[1])]  # type: ignore[index]
    transform = fit_transform(
        spec, x_train[torch.from_numpy(np.asarray(own))], transport, protection=protection
    )
    x_train = transform(x_train)
    if job.test is not None:
        job.test = (transform(job.test[0]), job.test[1])
    if site_test is not None:
        site_test = (transform(site_test[0]), site_test[1])
    if transform.output_shape != transform.input_shape:
        job.feature_shape = transform.output_shape
        if job.model_config is not None:  # a zoo model: the same architecture on K inputs
            from ddla.compute.layout import build_layout
            from ddla.models import build_model

            job.model = build_model(
                job.model_config,
                input_shape=transform.output_shape,
                num_classes=job.num_classes,
                seed=config.train.seed,
            )
            layout = build_layout(config.model, job.model, transport)
    return Prepared(x_train=x_train, site_test=site_test, transform=transform, layout=layout)
