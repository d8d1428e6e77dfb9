"""Command-line tools: video files -> TFRecord shards, inspection, demo data."""
