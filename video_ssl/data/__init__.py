"""Data layer: schema, temporal sampling, decoding, augmentation, audio, flow, demo data."""
