"""Datasets (COCO, PASCAL VOC, BDD100K, synthetic), semi-supervision splits and training loaders.

`catalog.load(name, root, split, **options)` returns a `Dataset` (records + metadata);
`splits` turns records into a semi-supervised training set; `loading.make_loader` batches them.
"""

from shapeprop.data.records import DataError, Dataset, DatasetMetadata, MissingDataError

__all__ = ["DataError", "Dataset", "DatasetMetadata", "MissingDataError"]
