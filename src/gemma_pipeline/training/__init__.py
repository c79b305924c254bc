"""QLoRA training: recipe (quantization, LoRA, trainer settings), data collation, the trainer."""
