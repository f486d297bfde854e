"""Datasets (uint8 arrays, a registry) and the on-device input pipeline."""
from data.datasets import DATASETS, ArrayDataset, DatasetSpec, load_dataset
from data.loader import DeviceData, split_test

__all__ = ["DATASETS", "ArrayDataset", "DatasetSpec", "load_dataset", "DeviceData", "split_test"]
