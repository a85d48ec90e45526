"""What the kinds' training, evaluation and prediction share: distributed launch, DeepSpeed, the
transformers Trainer helpers, language-model helpers, metrics, report pieces, score aggregation and
the image/video predict loop."""
