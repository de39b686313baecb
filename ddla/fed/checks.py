"""Cross-section rules of federated mode, checked when the RunConfig is built: every
combination federated mode cannot cover is refused here in one line."""

from __future__ import annotations

from typing import Any

from ddla.errors import ConfigError


def check_fed(config: Any) -> None:
    """Refuse what a federated run cannot do (called by :class:`ddla.config.RunConfig`)."""
    from ddla.aggregate.robust import parse_rule, refuse_robust_secure
    from ddla.fed.byzantine import parse_byzantine
    from ddla.sync import STRATEGIES

    fed, strategy = config.fed, config.sync.strategy
    federated = getattr(STRATEGIES[strategy], "federated", False)
    if federated and fed.clients < 1:
        raise ConfigError(
            f"sync.strategy={strategy} needs fed.clients >= 1",
            help="e.g. --set fed.clients=100 --set fed.fraction=0.1",
        )
    if not federated and fed.clients:
        raise ConfigError(
            f"fed.clients={fed.clients} needs a federated sync.strategy, got {strategy!r}",
            help="use --set sync.strategy=fedavg (or fedsgd, fedprox, fedavgm, fedadam, "
            "fedyogi, scaffold)",
        )
    if not federated:
        return
    if getattr(config.data, "source", None) is not None:
        raise ConfigError(
            f"sync.strategy={strategy} partitions one dataset into fed.clients; data.source "
            "gives each agent its own data, with nothing to partition",
            help="unset data.source (use data.dataset), or use a non-federated sync.strategy",
        )
    if strategy == "fedsgd" and (fed.epochs != 1 or fed.batch != 0):
        raise ConfigError(
            f"sync.strategy=fedsgd is E=1, B=inf; got fed.epochs={fed.epochs}, "
            f"fed.batch={fed.batch}",
            help="add --set fed.epochs=1 --set fed.batch=0, or use sync.strategy=fedavg",
        )
    rule = parse_rule(fed.aggregate)
    if fed.per_round < rule.min_updates():
        raise ConfigError(
            f"fed.aggregate={fed.aggregate} needs at least {rule.min_updates()} client updates "
            f"per round; fed.clients * fed.fraction gives {fed.per_round}",
            help="raise fed.fraction or fed.clients, or lower F",
        )
    refuse_robust_secure(fed.aggregate, config.security.secure_aggregation)
    if rule.robust and config.sync.compress != "none":
        raise ConfigError(
            f"fed.aggregate={fed.aggregate} with sync.compress={config.sync.compress} is not "
            "supported: robust rules gather individual fp32 updates",
            help="use fed.aggregate=mean with a compressor, or sync.compress=none",
        )
    byz = parse_byzantine(fed.byzantine)
    if byz is not None and byz.count > fed.clients:
        raise ConfigError(
            f"fed.byzantine={fed.byzantine} asks for {byz.count} malicious clients of "
            f"{fed.clients}",
            help="K in K:KIND is at most fed.clients",
        )
    if strategy == "scaffold":
        _check_scaffold(config, rule.robust)
    if fed.dp != "none":
        _check_dp(config, strategy, rule.robust)


def _check_scaffold(config: Any, robust: bool) -> None:
    fed = config.fed
    if robust:
        raise ConfigError(
            f"sync.strategy=scaffold cannot use fed.aggregate={fed.aggregate}",
            help="SCAFFOLD's control-variate update c += |S|/M mean(dc_i) is defined for the "
            "mean: use fed.aggregate=mean",
        )
    if config.train.checkpoint_every:
        raise ConfigError(
            "sync.strategy=scaffold cannot checkpoint (train.checkpoint_every > 0)",
            help="the per-client control variates live on disk outside the checkpoint, so a "
            "resume would not be exact: set train.checkpoint_every=0",
        )


def _check_dp(config: Any, strategy: str, robust: bool) -> None:
    fed = config.fed
    if fed.clip <= 0:
        raise ConfigError(
            f"fed.dp={fed.dp} needs the clip S: fed.clip > 0",
            help="DP-FedAvg bounds each client's contribution by clipping: e.g. --set fed.clip=1",
        )
    if fed.dp_noise <= 0:
        raise ConfigError(
            f"fed.dp={fed.dp} needs fed.dp_noise > 0",
            help="the noise multiplier sigma = 0 gives no privacy (epsilon = inf): e.g. "
            "--set fed.dp_noise=1.0",
        )
    if robust:
        raise ConfigError(
            f"fed.dp={fed.dp} cannot use fed.aggregate={fed.aggregate}",
            help="the noise is calibrated to the sensitivity S of the SUM of clipped updates; "
            "a robust rule is not a sum: use fed.aggregate=mean",
        )
    if strategy == "scaffold":
        raise ConfigError(
            "fed.dp cannot run with sync.strategy=scaffold",
            help="SCAFFOLD also releases each client's control-variate change, which the "
            "accountant does not cover: use fedavg/fedprox/fedavgm/fedadam/fedyogi",
        )
    if config.sync.compress != "none":
        raise ConfigError(
            f"fed.dp={fed.dp} with sync.compress={config.sync.compress} is not supported",
            help="compressing each agent's noised share before the sum is not post-processing "
            "of the noised sum: use sync.compress=none",
        )
