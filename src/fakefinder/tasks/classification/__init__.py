"""The timm classification family, shared by `deepfake_detector` and `image_classifier`: the networks
(a timm backbone, an optional frequency branch and manipulation-mask head), their losses, the data
they train on, the training loop, scoring and export."""
