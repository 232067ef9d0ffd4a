"""Scale-out on a Dask cluster (the optional `scale` extra: `pip install galaxymorph[scale]`)."""

from galaxymorph.scale.cluster import WORKER_OPTIONS, classify_dataframe, classify_on_cluster

__all__ = ["WORKER_OPTIONS", "classify_dataframe", "classify_on_cluster"]
