"""Several hosts on one machine, for real: the portal's multi-node shape in network
namespaces (``python -m deploy.cluster up``), and the fixture the cluster tests use."""
