"""edgectl: a networking-first, lightweight Kubernetes-style edge stack.

This package (folder ``common/``) holds only what every component shares: the
CLI entry, configuration loading, logging and well-known paths.
"""
__version__ = "0.1.0"
