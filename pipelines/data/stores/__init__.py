"""Signal and field stores on Zarr v3, local or on any fsspec URL (``s3://`` included)."""

from pipelines.data.stores.errors import StoreError
from pipelines.data.stores.location import StoreLocation, make_location
from pipelines.data.stores.reader import ModalityInfo, Store, open_store
from pipelines.data.stores.writer import ModalityData, write_signal_store

__all__ = [
    "ModalityData",
    "ModalityInfo",
    "Store",
    "StoreError",
    "StoreLocation",
    "make_location",
    "open_store",
    "write_signal_store",
]
