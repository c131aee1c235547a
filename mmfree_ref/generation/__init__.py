"""Generation: sampling a next token from logits, and streaming generation with the MLGRU state."""
