"""Train the offline feature network for the Frechet distance: ``python -m dancelcm.tools.feature_net
root=data/synthetic out=checkpoints/feature_net`` (options in ``conf/feature_net.yaml``; the network itself is
:mod:`dancelcm.metrics.features`)."""

from __future__ import annotations

import json
import logging

from dancelcm.cli import command
from dancelcm.metrics.features import train_feature_net

log = logging.getLogger(__name__)


def run(cfg) -> dict:
    """Train the feature network with ``conf/feature_net.yaml``'s options: callable in-process."""
    result = train_feature_net(cfg.root, cfg.out, int(cfg.steps), int(cfg.batch_size), float(cfg.lr), int(cfg.seed))
    log.info(json.dumps(result, indent=1))
    return result


main = command("tools.feature_net", run, __doc__, config_name="feature_net")

if __name__ == "__main__":
    main()
