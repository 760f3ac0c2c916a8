"""Run directories: resumable chunked work and data-parallel workers (shards) sharing one folder."""

from personalens.runs.sharding import Shard

__all__ = ["Shard"]
