"""Media in: images and video frames decoded (PIL, PyAV), whatever reads them."""
