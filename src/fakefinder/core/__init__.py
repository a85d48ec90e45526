"""What every layer shares: errors, atomic files, devices, checkpoints and model artifacts, process
pools, run-folder locks and progress events. Nothing here imports training, inference or models."""
