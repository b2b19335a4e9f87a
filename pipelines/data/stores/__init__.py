"""Signal and field stores on Zarr v3, local or on any fsspec URL (``s3://`` included)."""

from pipelines.data.stores.errors import DiskFull, StoreError, is_disk_full
from pipelines.data.stores.location import StoreLocation, make_location
from pipelines.data.stores.reader import ModalityInfo, Store, open_store
from pipelines.data.stores.writer import ModalityData, write_signal_store

__all__ = [
    "DiskFull",
    "ModalityData",
    "ModalityInfo",
    "Store",
    "StoreError",
    "StoreLocation",
    "make_location",
    "open_store",
    "is_disk_full",
    "write_signal_store",
]
