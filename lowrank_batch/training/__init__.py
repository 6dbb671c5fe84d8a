"""Training the codec's learned layers: corpus assembly, training pairs, the trainer, evaluation."""
