"""Features of any video collection: the library behind `python -m video_ssl.extract`.

- `encoder.load_model(path, encoder)`: a training run's encoder or an exported
  SavedModel as one `Encoder` (forward function, modality, evaluation view);
- `inputs.list_videos(input, ...)`: the videos of a class folder, a CSV or TFRecord
  shards, each able to give its parsed features (what the pipeline's parser gives);
- `sampling.Sampling`: `--clips` or `--window_s/--stride_s`, clips of one video;
- `output.ChunkedOutput`: the resumable OUT/ folder;
- `run.extract(...)`: them wired together;
- `neighbours.save_sheet(OUT, k)`: OUT/neighbours.png of a finished extraction.
"""
