"""``steno-operator`` (or ``python -m steno_operator``): run the operator.

Builds everything once, explicitly, then hands over to Kopf in standalone
mode (one operator per cluster, no peering objects; the chart runs one
replica with the Recreate strategy):

1. settings from the environment (see :mod:`steno_operator.settings`),
   overridden by the flags below;
2. the Kubernetes client from ``--kubeconfig``/``$KUBECONFIG`` or in-cluster;
3. the metrics endpoint, the reconciler and the handler registry;
4. ``kopf.run``, watching every namespace or the ones named.

SIGTERM and SIGINT stop Kopf gracefully; the job loops are cancelled and
nothing else needs cleaning up: all state lives in the cluster and in
object storage, so the next start resumes every job where it stands.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steno-operator",
        description="Run TranscriptionJobs (steno.dev/v1alpha1) as GPU Jobs and report "
        "their progress and results.",
    )
    parser.add_argument("--namespace", "-n", action="append", default=None, metavar="NS",
                        help="watch only this namespace, by exact name (repeatable; default: "
                        "$STENO_NAMESPACES, else every namespace)")
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="kubeconfig file (default: $KUBECONFIG, else in-cluster)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="Prometheus port, 0 to disable (default: $STENO_METRICS_PORT "
                        "or 8080)")
    parser.add_argument("--health-port", type=int, default=None,
                        help="liveness port, 0 to disable (default: $STENO_HEALTH_PORT or 8081)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=LOG_FORMAT)
    if not args.verbose:
        # Kopf logs every handled event at INFO; its warnings and errors are what matter.
        logging.getLogger("kopf").setLevel(logging.WARNING)
    # Imported here so `steno-operator --help` is instant and nothing runs at import.
    import kopf

    from steno_operator import handlers, kube
    from steno_operator.metrics import OperatorMetrics
    from steno_operator.reconciler import Reconciler
    from steno_operator.settings import SettingsError, settings_from_env

    try:
        settings = settings_from_env(
            os.environ,
            namespaces=tuple(args.namespace) if args.namespace else None,
            kubeconfig=args.kubeconfig,
            metrics_port=args.metrics_port,
            health_port=args.health_port,
        )
    except SettingsError as error:
        print(f"steno-operator: {error}", file=sys.stderr)
        return 2
    api = kube.api_client(settings.kubeconfig)
    metrics = OperatorMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.metrics_host)
    reconciler = Reconciler(settings, kube.KubeClient(api), metrics)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, handlers.OperatorContext(api=api, reconciler=reconciler,
                                                         metrics=metrics))
    kopf_settings = kopf.OperatorSettings()
    handlers.configure(kopf_settings)
    liveness = (f"http://{settings.metrics_host}:{settings.health_port}/healthz"
                if settings.health_port else None)
    image = settings.worker.image
    tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
    if "@sha256:" not in image and not tagged:
        # Pods of one job must all run the same worker: a moving tag breaks that.
        logging.getLogger(__name__).warning(
            "the worker image %s is not pinned (set STENO_WORKER_IMAGE to a version or digest)",
            image)
    logging.getLogger(__name__).info(
        "steno-operator: worker image %s, %s", settings.worker.image,
        f"namespaces {', '.join(settings.namespaces)}" if settings.namespaces
        else "every namespace")
    kopf.run(
        registry=registry,
        settings=kopf_settings,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
