"""Data for ddla agents: load a dataset, split it among agents, stream each agent's batches.

Example:
    >>> from ddla.data import AgentBatches, load_dataset, partition, partition_stats
    >>> ds = load_dataset("digits", seed=0)
    >>> parts = partition("dirichlet:0.5", ds.y_train, n_agents=4, seed=0)
    >>> sum(partition_stats(parts, ds.y_train, ds.num_classes)["sizes"]) == len(ds.y_train)
    True
    >>> batches = AgentBatches(parts[0], batch_size=32, seed=0, rank=0)
    >>> ds.x_train[batches.batch(0)].shape
    torch.Size([32, 1, 8, 8])
"""

from ddla.data.batches import AgentBatches
from ddla.data.dataset import Dataset
from ddla.data.loaders import DATASETS, load_dataset
from ddla.data.partition import PARTITIONERS, parse_partition, partition
from ddla.data.table import partition_stats, partition_table

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "AgentBatches",
    "Dataset",
    "load_dataset",
    "parse_partition",
    "partition",
    "partition_stats",
    "partition_table",
]
