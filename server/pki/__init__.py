"""Cluster certificates: CAs, API serving/client certs, node certs (see cluster.py).

``issue`` makes certificates in memory; ``cluster`` keeps them on disk and
builds TLS contexts; ``files`` writes atomically with the right modes.
"""
from edgectl.joinproto import NodeCerts

from .cluster import DEFAULT_SANS, ClusterPKI
from .issue import CertKey

__all__ = ["DEFAULT_SANS", "CertKey", "ClusterPKI", "NodeCerts"]
