"""Data layer: schema, shard reading, views and the typed input spec, temporal sampling,
clips, crops, decoding, augmentation, audio, optical flow, the input pipeline, demo data.

It knows nothing of methods, models or evaluation (tests/test_layering.py)."""
