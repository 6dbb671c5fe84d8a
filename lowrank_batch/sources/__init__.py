"""Sources other than files and buckets (fsspec): a PACS through DICOMweb."""
