"""What runs citysense for real: the broker configuration, systemd units, Kubernetes manifests,
Prometheus rules and a Grafana dashboard.

This directory is packaged as ``services.deploy`` (see pyproject.toml), so an installed wheel carries
the broker template that ``citysense up`` renders, and operators find the other files beside it.
"""
