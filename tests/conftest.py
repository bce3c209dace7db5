"""Shared pytest fixtures. Keep this file small: import fixtures from their packages."""
from edgectl.lab.testing import lab_factory  # noqa: F401  (network-namespace labs, removed after each test)
