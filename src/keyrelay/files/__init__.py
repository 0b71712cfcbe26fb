"""File sources (local, S3, GCS, Azure Blob): path containment, ranges, stores, listing and reading."""
