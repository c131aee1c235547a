"""Training: the loop (train), AdamW (optim), the learning-rate schedule, the byte corpus and
tokenizer."""
