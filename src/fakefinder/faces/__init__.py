"""Face extraction: datasets in their published layouts (FaceForensics++, DFDC, Celeb-DF, folders,
CSV lists), face detectors with fallbacks, the one extraction path (sample, decode, detect, crop,
encode) that prepare, predict and evaluation share, identity-safe splits, `fakefinder prepare`, and
the manifest it writes."""
