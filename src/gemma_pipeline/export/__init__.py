"""After training: the fine-tune as artifacts other tools load, each checked against its source."""
