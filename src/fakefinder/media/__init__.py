"""Media in, face crops out: image and video decoding, face detectors, and the one extraction
path (sample, decode, detect, crop, encode) that prepare, predict and evaluation share."""
