"""The Ray engine: the same DataFusion SQL, run as map/reduce tasks across a Ray cluster.

The only package that imports ``ray`` (install it with ``pip install 'kalla[ray]'``).
:func:`connect` joins the cluster once per process; :func:`run_job_ray` runs one job with
the local run's semantics and evidence. See ``docs/DISTRIBUTED.md``.
"""

from ._cluster import ClusterInfo, cluster_info, connect
from ._options import RayOptions
from ._run import run_job_ray

__all__ = ["ClusterInfo", "RayOptions", "cluster_info", "connect", "run_job_ray"]
