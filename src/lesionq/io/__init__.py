"""File formats and headers: the only layer that knows paths, NIfTI, DICOM and BIDS."""
