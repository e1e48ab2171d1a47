"""The ``citysense`` command and the local stack it can start (``citysense up``): the one place that
imports every service. Nothing imports the launcher."""
